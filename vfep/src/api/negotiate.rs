//! Content negotiation: the same data as JSON or XML, chosen by the Accept header.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Json,
    Xml,
    OctetStream,
}

impl MediaType {
    pub fn mime(self) -> &'static str {
        match self {
            MediaType::Json => "application/json",
            MediaType::Xml => "application/xml",
            MediaType::OctetStream => "application/octet-stream",
        }
    }

    fn matches(self, range: &str) -> bool {
        match range {
            "*/*" | "application/*" => true,
            "application/json" => self == MediaType::Json,
            "application/xml" | "text/xml" => self == MediaType::Xml,
            "application/octet-stream" => self == MediaType::OctetStream,
            _ => false,
        }
    }
}

/// The offered type the client rates highest (q-values honoured, ties to the server's order);
/// the first offered when there is no Accept header; None when nothing offered is acceptable.
pub fn negotiate(accept: Option<&str>, offered: &[MediaType]) -> Option<MediaType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return offered.first().copied();
    };
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let range = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (range, q)
        })
        .collect();
    let specificity = |range: &str| match range {
        "*/*" => 0,
        r if r.ends_with("/*") => 1,
        _ => 2,
    };
    let quality = |media: MediaType| {
        // The most specific matching range decides, per RFC 9110.
        ranges
            .iter()
            .filter(|(range, _)| media.matches(range))
            .max_by_key(|(range, _)| specificity(range))
            .map_or(0.0, |(_, q)| *q)
    };
    let mut best: Option<(MediaType, f32)> = None;
    for &media in offered {
        let q = quality(media);
        if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((media, q));
        }
    }
    best.map(|(media, _)| media)
}

/// JSON or XML, as the request's Accept header asks; rejects with 406 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format(pub MediaType);

impl Format {
    pub const OFFERED: [MediaType; 2] = [MediaType::Json, MediaType::Xml];

    pub fn from_headers(
        headers: &HeaderMap,
        offered: &[MediaType],
    ) -> Result<MediaType, NotAcceptable> {
        let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
        negotiate(accept, offered).ok_or_else(|| NotAcceptable(offered.to_vec()))
    }

    /// `value` with status 200; `root` names the XML document element.
    pub fn render<T: Serialize>(self, root: &str, value: &T) -> Response {
        self.render_with(StatusCode::OK, root, value)
    }

    pub fn render_with<T: Serialize>(self, status: StatusCode, root: &str, value: &T) -> Response {
        let body = match self.0 {
            MediaType::Xml => quick_xml::se::to_string_with_root(root, value)
                .map(|xml| format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{xml}"))
                .map_err(|e| e.to_string()),
            _ => serde_json::to_string(value).map_err(|e| e.to_string()),
        };
        match body {
            Ok(body) => {
                let mut response = (status, body).into_response();
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(self.0.mime()));
                response
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        }
    }

    pub fn problem(self, status: StatusCode, message: impl Into<String>) -> Response {
        let problem = Problem {
            status: status.as_u16(),
            message: message.into(),
        };
        self.render_with(status, "problem", &problem)
    }
}

/// 406, listing what the server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAcceptable(Vec<MediaType>);

impl IntoResponse for NotAcceptable {
    fn into_response(self) -> Response {
        let list: Vec<_> = self.0.iter().map(|m| m.mime()).collect();
        let body = format!("acceptable: {}\n", list.join(", "));
        (StatusCode::NOT_ACCEPTABLE, body).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Format {
    type Rejection = NotAcceptable;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Format::from_headers(&parts.headers, &Format::OFFERED).map(Format)
    }
}

/// An error body, in the negotiated format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub status: u16,
    pub message: String,
}

/// Parses a request body as JSON or XML by its Content-Type (JSON when absent). Any other type
/// is a 415 that lists `accepted`, the types the endpoint takes; a body that does not parse, a 400.
pub fn parse_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    accepted: &str,
) -> Result<T, (StatusCode, String)> {
    let body = body.map_err(|rejection| (rejection.status(), rejection.body_text()))?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    let essence = content_type.as_deref().map_or("application/json", |t| {
        t.split(';').next().unwrap_or("").trim()
    });
    let bad_request = |message: String| (StatusCode::BAD_REQUEST, message);
    let text = std::str::from_utf8(&body).map_err(|_| bad_request("body is not UTF-8".into()))?;
    // application/json, text/json and any +json type (application/problem+json, …); XML alike.
    let is = |syntax: &str| {
        essence.ends_with(&format!("+{syntax}"))
            || essence
                .split_once('/')
                .is_some_and(|(top, sub)| matches!(top, "application" | "text") && sub == syntax)
    };
    match essence {
        _ if is("json") => {
            serde_json::from_str(text).map_err(|e| bad_request(format!("JSON body: {e}")))
        }
        _ if is("xml") => {
            quick_xml::de::from_str(text).map_err(|e| bad_request(format!("XML body: {e}")))
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {other:?} is not accepted here; send {accepted}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaType::*;

    #[test]
    fn bodies_are_parsed_by_their_media_type_and_others_are_415() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Command {
            packet: String,
        }
        let parse = |content_type: Option<&str>, body: &'static str| {
            let mut headers = HeaderMap::new();
            if let Some(t) = content_type {
                headers.insert(CONTENT_TYPE, HeaderValue::from_str(t).unwrap());
            }
            parse_body::<Command>(&headers, Ok(Bytes::from_static(body.as_bytes())), "JSON")
        };
        let json = r#"{"packet":"00"}"#;
        let xml = "<command><packet>00</packet></command>";
        let want = Ok(Command {
            packet: "00".into(),
        });
        for content_type in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("text/json"),
            Some("application/vnd.vgs+json"),
        ] {
            assert_eq!(parse(content_type, json), want, "{content_type:?}");
        }
        for content_type in ["application/xml", "text/xml", "application/vnd.vgs+xml"] {
            assert_eq!(parse(Some(content_type), xml), want, "{content_type}");
        }
        for content_type in ["text/plain", "application/jsonx", "image/json", ""] {
            let (status, message) = parse(Some(content_type), json).unwrap_err();
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
            assert!(message.ends_with("; send JSON"), "{message}");
        }
        let (status, message) = parse(None, "{").unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("JSON body: "), "{message}");
    }

    #[test]
    fn honours_q_values_and_wildcards() {
        let offered = [Json, Xml];
        assert_eq!(negotiate(None, &offered), Some(Json));
        assert_eq!(negotiate(Some("application/xml"), &offered), Some(Xml));
        assert_eq!(negotiate(Some("text/xml"), &offered), Some(Xml));
        assert_eq!(
            negotiate(Some("application/json;q=0.5, application/xml"), &offered),
            Some(Xml)
        );
        assert_eq!(negotiate(Some("*/*"), &offered), Some(Json));
        assert_eq!(
            negotiate(Some("*/*;q=0.1, application/xml;q=0.2"), &offered),
            Some(Xml)
        );
        assert_eq!(
            negotiate(Some("application/*, application/json;q=0"), &offered),
            Some(Xml)
        );
        assert_eq!(negotiate(Some("text/html"), &offered), None);
        assert_eq!(
            negotiate(Some("application/octet-stream"), &[Json, Xml, OctetStream]),
            Some(OctetStream)
        );
    }
}
