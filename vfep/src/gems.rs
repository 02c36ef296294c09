//! GEMS-ASCII messages (OMG Ground Equipment Monitoring Service 1.4, ASCII form):
//! `|GEMS|14|<10-digit total length>|<transaction id>|<token>|<sec.nsec>|<target>|<TYPE>|...|END`.
//!
//! Free text is escaped (`&` `&a`, `|` `&b`, `,` `&c`, `;` `&d`). Parameters are
//! `Name:type=value`, lists `Name:type[n]=a,b`, parameter sets
//! `Name:set_type=A:int=1;B:string=x;` and lists of sets separated by `,`.
//! Rendering is canonical (nanoseconds always 9 digits), so a canonical message renders back
//! byte for byte.

use std::fmt::{self, Write};

pub const MARKER: &[u8] = b"|GEMS|";
const VERSION: &str = "14";
/// `|GEMS|14|` plus the 10-digit length and its `|`.
const PREFIX_LEN: usize = 20;
const TRAILER: &str = "|END";
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// GEMS result codes used here.
pub mod code {
    pub const SUCCESS: &str = "SUCCESS";
    pub const INVALID_PARAMETER: &str = "INVALID_PARAMETER";
    pub const INVALID_RANGE: &str = "INVALID_RANGE";
    pub const INVALID_STATE: &str = "INVALID_STATE";
    pub const INVALID_TARGET: &str = "INVALID_TARGET";
    pub const UNSUPPORTED_MESSAGE: &str = "UNSUPPORTED_MESSAGE";
    pub const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";
    pub const ACCESS_DENIED: &str = "ACCESS_DENIED";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub seconds: u64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn from_ns(ns: u64) -> Timestamp {
        Timestamp {
            seconds: ns / 1_000_000_000,
            nanos: (ns % 1_000_000_000) as u32,
        }
    }

    /// `sec` or `sec.fraction` with up to 9 fraction digits.
    fn parse(text: &str) -> Option<Timestamp> {
        let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if seconds.is_empty() || !digits(seconds) || fraction.len() > 9 || !digits(fraction) {
            return None;
        }
        let nanos = format!("{fraction:0<9}").parse().ok()?;
        Some(Timestamp {
            seconds: seconds.parse().ok()?,
            nanos,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.seconds, self.nanos)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Digits or empty.
    pub transaction_id: String,
    pub token: String,
    pub timestamp: Timestamp,
    pub target: String,
}

impl Header {
    /// The header of a reply: same transaction, token and target, current time.
    pub fn reply(&self, now: Timestamp) -> Header {
        Header {
            timestamp: now,
            ..self.clone()
        }
    }

    /// For replies to input whose header could not be read.
    pub fn anonymous(now: Timestamp) -> Header {
        Header {
            transaction_id: "0".into(),
            token: String::new(),
            timestamp: now,
            target: String::new(),
        }
    }
}

/// A result code and its optional description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: String,
    pub description: String,
}

impl Outcome {
    pub fn success() -> Outcome {
        Outcome::new(code::SUCCESS, "")
    }

    pub fn new(code: &str, description: impl Into<String>) -> Outcome {
        Outcome {
            code: code.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub type_name: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Scalar(String),
    List(Vec<String>),
    Set(Vec<Parameter>),
    SetList(Vec<Vec<Parameter>>),
}

impl Parameter {
    pub fn scalar(name: &str, type_name: &str, value: impl ToString) -> Parameter {
        Parameter {
            name: name.into(),
            type_name: type_name.into(),
            value: Value::Scalar(value.to_string()),
        }
    }

    pub fn list(name: &str, type_name: &str, values: Vec<String>) -> Parameter {
        Parameter {
            name: name.into(),
            type_name: type_name.into(),
            value: Value::List(values),
        }
    }

    pub fn set_list(name: &str, sets: Vec<Vec<Parameter>>) -> Parameter {
        Parameter {
            name: name.into(),
            type_name: SET_TYPE.into(),
            value: Value::SetList(sets),
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(v) => Some(v),
            _ => None,
        }
    }
}

const SET_TYPE: &str = "set_type";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Connect {
        connection_type: String,
    },
    ConnectResponse(Outcome),
    Disconnect {
        reason: String,
    },
    Ping,
    PingResponse(Outcome),
    /// No names: every parameter.
    Get {
        names: Vec<String>,
    },
    GetResponse {
        outcome: Outcome,
        parameters: Vec<Parameter>,
    },
    Set {
        parameters: Vec<Parameter>,
    },
    SetResponse {
        outcome: Outcome,
        parameters_set: Option<u32>,
    },
    Directive {
        name: String,
        arguments: Vec<Parameter>,
    },
    DirectiveResponse {
        outcome: Outcome,
        name: String,
        values: Vec<Parameter>,
    },
    Unknown(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub body: Body,
}

/// Why input is not a message this implementation handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{reason}")]
    Malformed {
        /// Present when the header could be read, so the reply can echo it.
        header: Option<Header>,
        reason: String,
    },
    #[error("unsupported message type {type_name}")]
    Unsupported { header: Header, type_name: String },
}

fn malformed(header: Option<&Header>, reason: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        header: header.cloned(),
        reason: reason.into(),
    }
}

impl Message {
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        let prefix = text
            .get(..PREFIX_LEN)
            .filter(|p| p.starts_with("|GEMS|") && p.ends_with('|'))
            .ok_or_else(|| malformed(None, "not a GEMS message"))?;
        if &prefix[6..8] != VERSION || &prefix[8..9] != "|" {
            return Err(malformed(None, "GEMS-ASCII version is not 14"));
        }
        let length: usize = prefix[9..19]
            .parse()
            .map_err(|_| malformed(None, "length is not 10 digits"))?;
        if length != text.len() {
            return Err(malformed(
                None,
                format!("length field {length} but message is {} long", text.len()),
            ));
        }
        if text.len() < PREFIX_LEN + TRAILER.len() || !text.ends_with(TRAILER) {
            return Err(malformed(None, "missing |END trailer"));
        }
        let fields: Vec<&str> = text[PREFIX_LEN..text.len() - TRAILER.len()]
            .split('|')
            .collect();
        if fields.len() < 5 {
            return Err(malformed(None, "incomplete header"));
        }
        let header = Header {
            transaction_id: fields[0]
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| fields[0].to_string())
                .ok_or_else(|| malformed(None, "transaction id is not a number"))?,
            token: unescape(fields[1]).map_err(|e| malformed(None, e))?,
            timestamp: Timestamp::parse(fields[2])
                .ok_or_else(|| malformed(None, "timestamp is not sec.nsec"))?,
            target: unescape(fields[3]).map_err(|e| malformed(None, e))?,
        };
        let body = parse_body(fields[4], &fields[5..]).map_err(|e| match e {
            BodyError::Unsupported => ParseError::Unsupported {
                header: header.clone(),
                type_name: fields[4].to_string(),
            },
            BodyError::Malformed(reason) => malformed(Some(&header), reason),
        })?;
        Ok(Message { header, body })
    }

    pub fn render(&self) -> String {
        let mut content = String::new();
        let h = &self.header;
        let _ = write!(
            content,
            "{}|{}|{}|{}|",
            h.transaction_id,
            escape(&h.token),
            h.timestamp,
            escape(&h.target)
        );
        let mut field = |text: &str| {
            content.push_str(text);
            content.push('|');
        };
        let outcome_fields = |field: &mut dyn FnMut(&str), o: &Outcome| {
            field(&escape(&o.code));
            field(&escape(&o.description));
        };
        match &self.body {
            Body::Connect { connection_type } => {
                field("CON");
                field(&escape(connection_type));
            }
            Body::ConnectResponse(o) => {
                field("CON-R");
                outcome_fields(&mut field, o);
            }
            Body::Disconnect { reason } => {
                field("DISC");
                field(&escape(reason));
            }
            Body::Ping => field("PING"),
            Body::PingResponse(o) => {
                field("PING-R");
                outcome_fields(&mut field, o);
            }
            Body::Get { names } => {
                field("GET");
                if names.is_empty() {
                    field("");
                } else {
                    field(&names.len().to_string());
                    names.iter().for_each(|n| field(&escape(n)));
                }
            }
            Body::GetResponse {
                outcome,
                parameters,
            } => {
                field("GET-R");
                outcome_fields(&mut field, outcome);
                parameter_fields(&mut field, parameters);
            }
            Body::Set { parameters } => {
                field("SET");
                parameter_fields(&mut field, parameters);
            }
            Body::SetResponse {
                outcome,
                parameters_set,
            } => {
                field("SET-R");
                outcome_fields(&mut field, outcome);
                field(&parameters_set.map(|n| n.to_string()).unwrap_or_default());
            }
            Body::Directive { name, arguments } => {
                field("DIR");
                field(&escape(name));
                parameter_fields(&mut field, arguments);
            }
            Body::DirectiveResponse {
                outcome,
                name,
                values,
            } => {
                field("DIR-R");
                outcome_fields(&mut field, outcome);
                field(&escape(name));
                parameter_fields(&mut field, values);
            }
            Body::Unknown(o) => {
                field("UKN-R");
                outcome_fields(&mut field, o);
            }
        }
        content.push_str("END");
        format!(
            "|GEMS|{VERSION}|{:010}|{content}",
            PREFIX_LEN + content.len()
        )
    }
}

fn parameter_fields(field: &mut dyn FnMut(&str), parameters: &[Parameter]) {
    field(&parameters.len().to_string());
    for parameter in parameters {
        let mut text = String::new();
        render_parameter(&mut text, parameter);
        field(&text);
    }
}

enum BodyError {
    Unsupported,
    Malformed(String),
}

impl From<String> for BodyError {
    fn from(reason: String) -> Self {
        BodyError::Malformed(reason)
    }
}

fn parse_body(type_name: &str, fields: &[&str]) -> Result<Body, BodyError> {
    let arity = |n: usize| -> Result<(), BodyError> {
        if fields.len() == n {
            Ok(())
        } else {
            Err(format!("{type_name} takes {n} fields, got {}", fields.len()).into())
        }
    };
    let outcome = |i: usize| -> Result<Outcome, String> {
        Ok(Outcome {
            code: unescape(fields[i])?,
            description: unescape(fields[i + 1])?,
        })
    };
    Ok(match type_name {
        "CON" => {
            arity(1)?;
            Body::Connect {
                connection_type: unescape(fields[0])?,
            }
        }
        "CON-R" => {
            arity(2)?;
            Body::ConnectResponse(outcome(0)?)
        }
        "DISC" => {
            arity(1)?;
            Body::Disconnect {
                reason: unescape(fields[0])?,
            }
        }
        "PING" => {
            arity(0)?;
            Body::Ping
        }
        "PING-R" => {
            arity(2)?;
            Body::PingResponse(outcome(0)?)
        }
        "GET" => {
            let names = match fields {
                [""] | ["0"] => Vec::new(),
                [count, names @ ..] => {
                    counted(count, names.len())?;
                    names
                        .iter()
                        .map(|n| unescape(n))
                        .collect::<Result<_, _>>()?
                }
                [] => return Err("GET without a parameter count".to_string().into()),
            };
            Body::Get { names }
        }
        "GET-R" => {
            if fields.len() < 3 {
                return Err("GET-R needs a result, description and count"
                    .to_string()
                    .into());
            }
            Body::GetResponse {
                outcome: outcome(0)?,
                parameters: parse_parameters(&fields[2..])?,
            }
        }
        "SET" => Body::Set {
            parameters: parse_parameters(fields)?,
        },
        "SET-R" => {
            arity(3)?;
            Body::SetResponse {
                outcome: outcome(0)?,
                parameters_set: match fields[2] {
                    "" => None,
                    n => Some(
                        n.parse()
                            .map_err(|_| format!("count {n:?} is not a number"))?,
                    ),
                },
            }
        }
        "DIR" => {
            if fields.len() < 2 {
                return Err("DIR needs a name and a count".to_string().into());
            }
            Body::Directive {
                name: unescape(fields[0])?,
                arguments: parse_parameters(&fields[1..])?,
            }
        }
        "DIR-R" => {
            if fields.len() < 4 {
                return Err("DIR-R needs a result, description, name and count"
                    .to_string()
                    .into());
            }
            Body::DirectiveResponse {
                outcome: outcome(0)?,
                name: unescape(fields[2])?,
                values: parse_parameters(&fields[3..])?,
            }
        }
        "UKN-R" => {
            arity(2)?;
            Body::Unknown(outcome(0)?)
        }
        _ => return Err(BodyError::Unsupported),
    })
}

fn counted(count: &str, actual: usize) -> Result<(), String> {
    match count.parse::<usize>() {
        Ok(n) if n == actual => Ok(()),
        _ => Err(format!("count {count:?} but {actual} items follow")),
    }
}

/// A count field and that many parameter fields.
fn parse_parameters(fields: &[&str]) -> Result<Vec<Parameter>, String> {
    let (count, items) = fields.split_first().ok_or("missing parameter count")?;
    counted(count, items.len())?;
    items.iter().map(|f| parse_parameter(f, true)).collect()
}

/// `Name:type=value`, `Name:type[n]=a,b`; sets only at the top level (`nested` false inside).
fn parse_parameter(text: &str, top_level: bool) -> Result<Parameter, String> {
    let (name, rest) = text
        .split_once(':')
        .ok_or_else(|| format!("parameter {text:?} has no ':type'"))?;
    let (type_spec, value) = rest
        .split_once('=')
        .ok_or_else(|| format!("parameter {name:?} has no '=value'"))?;
    let (type_name, count) = match type_spec.split_once('[') {
        None => (type_spec, None),
        Some((t, n)) => {
            let n = n
                .strip_suffix(']')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| format!("parameter {name:?} has a bad [count]"))?;
            (t, Some(n))
        }
    };
    if name.is_empty() || type_name.is_empty() {
        return Err(format!("parameter {text:?} lacks a name or type"));
    }
    let value = match (type_name == SET_TYPE, count) {
        (true, _) if !top_level => return Err("nested parameter sets are not supported".into()),
        (true, None) => match parse_sets(value)?.as_mut_slice() {
            [one] => Value::Set(std::mem::take(one)),
            _ => return Err(format!("set {name:?} must hold exactly one element")),
        },
        (true, Some(n)) => {
            let sets = parse_sets(value)?;
            counted(&n.to_string(), sets.len())?;
            Value::SetList(sets)
        }
        (false, None) => Value::Scalar(unescape(value)?),
        (false, Some(n)) => {
            let items: Vec<String> = if value.is_empty() {
                Vec::new()
            } else {
                value.split(',').map(unescape).collect::<Result<_, _>>()?
            };
            counted(&n.to_string(), items.len())?;
            Value::List(items)
        }
    };
    Ok(Parameter {
        name: unescape(name)?,
        type_name: type_name.into(),
        value,
    })
}

/// Set elements separated by ',', each a run of `member;`.
fn parse_sets(mut rest: &str) -> Result<Vec<Vec<Parameter>>, String> {
    let mut sets = Vec::new();
    while !rest.is_empty() {
        let mut members = Vec::new();
        while !rest.is_empty() && !rest.starts_with(',') {
            let end = rest.find(';').ok_or("set member not terminated by ';'")?;
            members.push(parse_parameter(&rest[..end], false)?);
            rest = &rest[end + 1..];
        }
        sets.push(members);
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(sets)
}

fn render_parameter(out: &mut String, p: &Parameter) {
    let _ = write!(out, "{}:{}", escape(&p.name), p.type_name);
    let members = |out: &mut String, set: &[Parameter]| {
        for member in set {
            render_parameter(out, member);
            out.push(';');
        }
    };
    match &p.value {
        Value::Scalar(v) => {
            let _ = write!(out, "={}", escape(v));
        }
        Value::List(items) => {
            let _ = write!(out, "[{}]=", items.len());
            let escaped: Vec<String> = items.iter().map(|i| escape(i)).collect();
            out.push_str(&escaped.join(","));
        }
        Value::Set(set) => {
            out.push('=');
            members(out, set);
        }
        Value::SetList(sets) => {
            let _ = write!(out, "[{}]=", sets.len());
            for (i, set) in sets.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                members(out, set);
            }
        }
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&a"),
            '|' => out.push_str("&b"),
            ',' => out.push_str("&c"),
            ';' => out.push_str("&d"),
            c => out.push(c),
        }
    }
    out
}

pub fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '&' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('a') => '&',
            Some('b') => '|',
            Some('c') => ',',
            Some('d') => ';',
            other => return Err(format!("bad escape &{}", other.unwrap_or(' '))),
        });
    }
    Ok(out)
}

/// How the front of a receive buffer splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// A whole message of this many octets (which may still fail to parse).
    Message(usize),
    /// Line breaks and spaces between messages, dropped silently.
    Blank(usize),
    /// Octets that cannot start a message: reply UKN-R and drop them.
    Garbage(usize),
    NeedMore,
}

/// Finds the next message in a byte stream using the length in its header. Garbage runs up
/// to the next `|GEMS|` marker; every outcome but `NeedMore` consumes at least one octet.
pub fn frame(buf: &[u8]) -> Framed {
    let blank = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .count();
    if blank > 0 {
        return Framed::Blank(blank);
    }
    if buf.is_empty() || (buf.len() < MARKER.len() && MARKER.starts_with(buf)) {
        return Framed::NeedMore;
    }
    if !buf.starts_with(MARKER) {
        return Framed::Garbage(garbage_len(buf));
    }
    if buf.len() < PREFIX_LEN {
        return Framed::NeedMore;
    }
    let length = std::str::from_utf8(&buf[9..19])
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<usize>().ok());
    match length {
        Some(len)
            if buf[19] == b'|' && (PREFIX_LEN + TRAILER.len()..=MAX_MESSAGE_LEN).contains(&len) =>
        {
            if buf.len() < len {
                Framed::NeedMore
            } else {
                Framed::Message(len)
            }
        }
        _ => Framed::Garbage(garbage_len(buf)),
    }
}

/// From the start of `buf` to the next marker, keeping a possible partial marker at the end.
fn garbage_len(buf: &[u8]) -> usize {
    if let Some(next) = (1..buf.len()).find(|&i| buf[i..].starts_with(MARKER)) {
        return next;
    }
    let partial = (1..MARKER.len())
        .rev()
        .find(|&n| n < buf.len() && buf.ends_with(&MARKER[..n]))
        .unwrap_or(0);
    buf.len() - partial
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canonical messages, each with its length field computed by hand.
    const CANONICAL: &[&str] = &[
        "|GEMS|14|0000000067|1||1410819035.280000000|System/Device1|PING|END",
        "|GEMS|14|0000000078|1||1410819035.280000000|System/Device1|PING-R|SUCCESS||END",
        "|GEMS|14|0000000085|1||1410819035.260000000|System/Device1|CON|CONTROL_AND_STATUS|END",
        "|GEMS|14|0000000077|1||1410819035.260000000|System/Device1|CON-R|SUCCESS||END",
        "|GEMS|14|0000000135|1||1410819035.260000000|System/Device1|CON-R|INVALID_TARGET|Target System/Device1 does not exist in this system|END",
        "|GEMS|14|0000000086|1||1410819035.270000000|System/Device1|DISC|NORMAL_TERMINATION|END",
        "|GEMS|14|0000000067|1||1410819035.280000000|System/Device1|GET||END",
        "|GEMS|14|0000000110|1||1410819035.280000000|System/Device1|GET|3|PacketLength|FillPacket|ChannelConfigList|END",
        "|GEMS|14|0000000385|1||1410819035.280000000|System/Device1|GET-R|||5|PacketLength:int=1024|FillPacket:bool=true|EmptyStringList:string[0]=|EmptyIntList:int[0]=|ChannelConfigList:set_type[3]=ChannelName:string=Channel0;ChannelID:int=0;BitRate:int=200000;,ChannelName:string=Channel1;ChannelID:int=1;BitRate:int=400000;,ChannelName:string=Channel2;ChannelID:int=2;BitRate:int=600000;|END",
        "|GEMS|14|0000000205|1||1410819035.270000000|System/Device1|SET|5|Ampersand:string=Bob &a Sally|Pipe:string=Bob &b Sally|Comma:string=Bob&c Sally|Semicolon:string=Bob&d Sally|LessThan:string=Bob < Sally|END",
        "|GEMS|14|0000000079|1||1410819035.280000000|System/Device1|SET-R|SUCCESS||5|END",
        "|GEMS|14|0000000123|1||1410819035.270000000|System/Device1|DIR|StartProcessing|2|Iterations:int=2000|Title:string=Run 1|END",
        "|GEMS|14|0000000112|1||1410819035.270000000|System/Device1|DIR-R|||StartProcessing|1|Results:int[3]=12,47,33|END",
        "|GEMS|14|0000000091|0||1410819035.260000000||UKN-R|MALFORMED_MESSAGE|Not a GEMS message|END",
    ];

    #[test]
    fn canonical_messages_parse_and_render_byte_exact() {
        for text in CANONICAL {
            let message = Message::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(message.render(), *text);
        }
        assert_eq!(CANONICAL[0].len(), 67);
    }

    #[test]
    fn values_are_unescaped_and_sets_structured() {
        let set = Message::parse(CANONICAL[9]).unwrap();
        let Body::Set { parameters } = set.body else {
            panic!()
        };
        assert_eq!(parameters[0].as_scalar(), Some("Bob & Sally"));
        assert_eq!(parameters[1].as_scalar(), Some("Bob | Sally"));
        assert_eq!(parameters[2].as_scalar(), Some("Bob, Sally"));
        assert_eq!(parameters[3].as_scalar(), Some("Bob; Sally"));
        let get = Message::parse(CANONICAL[8]).unwrap();
        let Body::GetResponse { parameters, .. } = get.body else {
            panic!()
        };
        let Value::SetList(sets) = &parameters[4].value else {
            panic!()
        };
        assert_eq!(sets.len(), 3);
        assert_eq!(sets[2][2], Parameter::scalar("BitRate", "int", 600000));
    }

    #[test]
    fn rendering_computes_the_length() {
        let message = Message {
            header: Header {
                transaction_id: "42".into(),
                token: "t|k".into(),
                timestamp: Timestamp {
                    seconds: 1,
                    nanos: 5,
                },
                target: "vfep".into(),
            },
            body: Body::GetResponse {
                outcome: Outcome::success(),
                parameters: vec![
                    Parameter::list("Apids", "int", vec!["1".into(), "2".into()]),
                    Parameter::set_list(
                        "Channels",
                        vec![vec![Parameter::scalar("Name", "string", "a,b")]],
                    ),
                ],
            },
        };
        let text = message.render();
        assert_eq!(
            text,
            "|GEMS|14|0000000121|42|t&bk|1.000000005|vfep|GET-R|SUCCESS||2|Apids:int[2]=1,2|Channels:set_type[1]=Name:string=a&cb;|END"
        );
        assert_eq!(text.len(), 121);
        assert_eq!(Message::parse(&text).unwrap(), message);
    }

    #[test]
    fn malformed_input_is_rejected_with_the_header_when_readable() {
        let wrong_length = CANONICAL[0].replace("0000000067", "0000000068");
        assert!(matches!(
            Message::parse(&wrong_length),
            Err(ParseError::Malformed { header: None, .. })
        ));
        let bad_count = "|GEMS|14|0000000057|7||1.000000000|vfep|GET|2|OnlyOne|END";
        assert_eq!(bad_count.len(), 57);
        match Message::parse(bad_count) {
            Err(ParseError::Malformed {
                header: Some(h), ..
            }) => assert_eq!(h.transaction_id, "7"),
            other => panic!("{other:?}"),
        }
        let unknown = "|GEMS|14|0000000048|7||1.000000000|vfep|GETL|END";
        assert_eq!(unknown.len(), 48);
        assert!(matches!(
            Message::parse(unknown),
            Err(ParseError::Unsupported { .. })
        ));
        assert!(Message::parse("hello").is_err());
        let bad_escape = "|GEMS|14|0000000062|1||1.000000000|vfep|SET|1|A:string=x&z|END";
        assert_eq!(bad_escape.len(), 62);
        assert!(Message::parse(bad_escape).is_err());
    }

    #[test]
    fn framing_finds_messages_between_garbage_and_blanks() {
        let ping = CANONICAL[0].as_bytes();
        let mut stream = b"garbage".to_vec();
        stream.extend_from_slice(ping);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&ping[..30]);
        assert_eq!(frame(&stream), Framed::Garbage(7));
        assert_eq!(frame(&stream[7..]), Framed::Message(67));
        assert_eq!(frame(&stream[74..]), Framed::Blank(2));
        assert_eq!(frame(&stream[76..]), Framed::NeedMore);
        assert_eq!(frame(b"|GE"), Framed::NeedMore);
        assert_eq!(frame(b"xx|GE"), Framed::Garbage(2));
        // A bad length: skip to the next marker; the trailing '|' may start one.
        assert_eq!(frame(b"|GEMS|14|00000000x7|"), Framed::Garbage(19));
        assert_eq!(frame(b"|GEMS|14|9999999999|x"), Framed::Garbage(21));
    }
}
