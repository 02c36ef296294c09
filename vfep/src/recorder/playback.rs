//! Reading recordings back: the packets of some APIDs in a time range, in recorded order, as
//! fast as possible or at the original pace.

use std::fs::File;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Decoded, RECORD_HEADER_LEN, RecordView, SEGMENT_MAGIC, SegmentInfo, decode_record,
    list_segments,
};
use crate::codec::{PacketType, PrimaryHeader};

const READ_CHUNK: usize = 256 * 1024;

/// Reads one segment record by record, to the end or to an incomplete last record (a torn tail,
/// or the record the writer is appending right now).
///
/// A damaged record (bad CRC, impossible length) is skipped: the reader looks for the next
/// offset where a whole record with a good CRC starts and goes on from there, so damage on disk
/// costs the records it hit and not the rest of the segment. The octets passed over are counted;
/// a tail with no good record after it ends the segment.
pub struct SegmentReader {
    file: File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    at_eof: bool,
    /// File offset of `buf[start]`.
    offset: u64,
    /// File offset just past the last record returned.
    position: u64,
    /// Octets of damaged records skipped between good ones.
    skipped: u64,
}

impl SegmentReader {
    pub fn open(path: &Path) -> io::Result<SegmentReader> {
        let mut file = File::open(path)?;
        let mut magic = [0u8; SEGMENT_MAGIC.len()];
        match file.read_exact(&mut magic) {
            Ok(()) if &magic == SEGMENT_MAGIC => {}
            Ok(()) => return Err(io::Error::new(io::ErrorKind::InvalidData, "not a segment")),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "segment torn in its magic",
                ));
            }
            Err(e) => return Err(e),
        }
        Ok(SegmentReader {
            file,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            at_eof: false,
            offset: magic.len() as u64,
            position: magic.len() as u64,
            skipped: 0,
        })
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn next_record(&mut self) -> io::Result<Option<RecordView<'_>>> {
        loop {
            match decode_record(&self.buf[self.start..self.end]) {
                Decoded::Record(view, used) => {
                    let (received_ns, packet_type) = (view.received_ns, view.packet_type);
                    self.skipped += self.offset - self.position;
                    let packet = self.start + RECORD_HEADER_LEN..self.start + used;
                    self.start += used;
                    self.offset += used as u64;
                    self.position = self.offset;
                    return Ok(Some(RecordView {
                        received_ns,
                        packet_type,
                        packet: &self.buf[packet],
                    }));
                }
                Decoded::Incomplete { needed } => {
                    if !self.fill(needed)? {
                        if self.start == self.end {
                            return Ok(None);
                        }
                        // A torn tail, or a damaged length that claims more than is left: look
                        // for a good record in what is left; none means the tail (None above).
                        self.start += 1;
                        self.offset += 1;
                    }
                }
                Decoded::Corrupt => {
                    self.start += 1;
                    self.offset += 1;
                }
            }
        }
    }

    /// Makes `needed` octets available from `start`; false at end of file.
    fn fill(&mut self, needed: usize) -> io::Result<bool> {
        if self.end - self.start >= needed {
            return Ok(true);
        }
        if self.at_eof {
            return Ok(false);
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < needed {
            self.buf.resize(needed.max(READ_CHUNK), 0);
        }
        while self.end < needed {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.at_eof = true;
                    return Ok(false);
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Which records to play back: APIDs, and receive times in `from_ns..to_ns`.
#[derive(Debug, Clone)]
pub struct Selection {
    apids: Box<[bool; 2048]>,
    pub from_ns: u64,
    pub to_ns: u64,
}

impl Selection {
    /// The records of `apids` received in `[from_ns, to_ns)`; an inverted range is an error (it
    /// would select nothing, which looks like an empty recording).
    pub fn new(apids: &[u16], from_ns: u64, to_ns: u64) -> Result<Selection, String> {
        if from_ns > to_ns {
            return Err(format!(
                "from ({}) is after to ({}): give the earlier time as from",
                crate::time::format_rfc3339(from_ns),
                crate::time::format_rfc3339(to_ns)
            ));
        }
        let mut set = Box::new([false; 2048]);
        for &apid in apids {
            set[usize::from(apid) % 2048] = true;
        }
        Ok(Selection {
            apids: set,
            from_ns,
            to_ns,
        })
    }

    fn wants(&self, record: &RecordView<'_>) -> bool {
        (self.from_ns..self.to_ns).contains(&record.received_ns)
            && self.apids[usize::from(PrimaryHeader::of(record.packet).apid)]
    }
}

/// Calls `on` for each selected record, oldest first.
pub fn scan(
    dir: &Path,
    selection: &Selection,
    mut on: impl FnMut(RecordView<'_>) -> ControlFlow<()>,
) -> io::Result<()> {
    let segments = list_segments(dir)?;
    for (i, segment) in segments.iter().enumerate() {
        // Receive times only grow, so a segment ends before the next one starts.
        if segment.first_ns >= selection.to_ns {
            break;
        }
        if segments
            .get(i + 1)
            .is_some_and(|next| next.first_ns < selection.from_ns)
        {
            continue;
        }
        let mut reader = match SegmentReader::open(&segment.path) {
            Ok(reader) => reader,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
            Err(e) => return Err(e),
        };
        let mut stopped = false;
        while let Some(record) = reader.next_record()? {
            if selection.wants(&record) && on(record).is_break() {
                stopped = true;
                break;
            }
        }
        let closed = i + 1 < segments.len();
        report_damage(segment, &reader, closed && !stopped);
        if stopped {
            return Ok(());
        }
    }
    Ok(())
}

/// Logs what a read of `segment` had to pass over. `read_whole`: the segment is closed and was
/// read to its end, so anything after the last good record is damage too (only the segment
/// being written may end in a partly written record).
fn report_damage(segment: &SegmentInfo, reader: &SegmentReader, read_whole: bool) {
    let unreadable_tail = if read_whole {
        segment.size.saturating_sub(reader.position())
    } else {
        0
    };
    if reader.skipped() > 0 || unreadable_tail > 0 {
        tracing::warn!(
            segment = %segment.path.display(),
            skipped_bytes = reader.skipped(),
            unreadable_tail,
            "damaged records in the recording were skipped (bad CRC or length on disk)"
        );
    }
}

/// Played-back packets, concatenated, with their receive times.
#[derive(Debug, Default)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub records: Vec<ChunkRecord>,
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkRecord {
    pub received_ns: u64,
    pub packet_type: PacketType,
    pub len: u32,
}

impl Chunk {
    pub fn iter(&self) -> impl Iterator<Item = (ChunkRecord, &[u8])> {
        let mut offset = 0;
        self.records.iter().map(move |record| {
            let start = offset;
            offset += record.len as usize;
            (*record, &self.data[start..offset])
        })
    }
}

/// Scans on a blocking thread and hands the records over in chunks of about `chunk_bytes`,
/// at most `limit` records. Stops early when the receiver goes away.
pub fn spawn_scan(
    dir: PathBuf,
    selection: Selection,
    chunk_bytes: usize,
    limit: usize,
) -> mpsc::Receiver<io::Result<Chunk>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Chunk::default();
        let mut count = 0;
        let result = scan(&dir, &selection, |record| {
            chunk.data.extend_from_slice(record.packet);
            chunk.records.push(ChunkRecord {
                received_ns: record.received_ns,
                packet_type: record.packet_type,
                len: record.packet.len() as u32,
            });
            count += 1;
            if chunk.data.len() >= chunk_bytes
                && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
            {
                return ControlFlow::Break(());
            }
            if count >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        let last = match result {
            Ok(()) => Ok(chunk),
            Err(e) => Err(e),
        };
        let _ = tx.blocking_send(last);
    });
    rx
}

/// Delays records so they come out with the spacing they were received with.
#[derive(Debug, Default)]
pub struct Pacer {
    origin: Option<(u64, Instant)>,
}

impl Pacer {
    pub async fn wait(&mut self, received_ns: u64) {
        let (first_ns, start) = *self.origin.get_or_insert((received_ns, Instant::now()));
        let offset = Duration::from_nanos(received_ns.saturating_sub(first_ns));
        tokio::time::sleep_until(start + offset).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::tests::packet;
    use crate::recorder::{Recorder, RecorderStats};

    #[test]
    fn selects_by_apid_and_half_open_time_range_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) = Recorder::open(dir.path(), 700, RecorderStats::default()).unwrap();
        for n in 0..60u16 {
            recorder
                .append(u64::from(n) * 10, PacketType::Telemetry, &packet(n, 20))
                .unwrap();
        }
        recorder.sync().unwrap();
        assert!(list_segments(dir.path()).unwrap().len() > 3);

        // APID 100 + n % 3 == 101 means n % 3 == 1; times 100..400 mean n in 10..40.
        let selection = Selection::new(&[101], 100, 400).unwrap();
        assert!(Selection::new(&[101], 400, 100).is_err());
        let mut got = Vec::new();
        scan(dir.path(), &selection, |r| {
            got.push((r.received_ns, r.packet.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        let expected: Vec<_> = (10..40u16)
            .filter(|n| n % 3 == 1)
            .map(|n| (u64::from(n) * 10, packet(n, 20)))
            .collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn spawn_scan_chunks_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) =
            Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        for n in 0..100u16 {
            recorder
                .append(u64::from(n), PacketType::Telemetry, &packet(n, 20))
                .unwrap();
        }
        recorder.sync().unwrap();
        let selection = Selection::new(&[100, 101, 102], 0, u64::MAX).unwrap();
        let mut rx = spawn_scan(dir.path().to_owned(), selection, 100, 42);
        let mut packets = Vec::new();
        while let Some(chunk) = rx.recv().await {
            for (record, bytes) in chunk.unwrap().iter() {
                packets.push((record.received_ns, bytes.to_vec()));
            }
        }
        assert_eq!(packets.len(), 42);
        assert_eq!(packets[41], (41, packet(41, 20)));
    }
}
