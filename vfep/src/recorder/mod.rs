//! Recording of every TM and TC packet to append-only segment files in the recording directory.
//!
//! Segment file `<index:010>-<first receive time ns:020>.vrec`: the 8-octet magic `VFEPREC1`,
//! then records, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | packet length L |
//! | 4 | 8 | receive time, ns since the Unix epoch |
//! | 12 | 1 | direction: 0 TM (downlink), 1 TC (uplink) |
//! | 13 | 3 | zero |
//! | 16 | 4 | CRC-32 (IEEE) of octets 0..16 and the packet |
//! | 20 | L | the packet |
//!
//! Segments rotate by size and are fsync'd on an interval; after a crash the torn tail of the
//! last segment is cut off at the last complete record. Receive times never go backwards within
//! a run, which playback relies on to skip segments.

pub mod playback;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};

use crate::bus::Batch;
use crate::codec::{MAX_PACKET_LEN, PRIMARY_HEADER_LEN, PacketType};

pub const SEGMENT_MAGIC: &[u8; 8] = b"VFEPREC1";
pub const RECORD_HEADER_LEN: usize = 20;
const SEGMENT_EXTENSION: &str = "vrec";
/// Pending octets handed to the OS in one write.
const WRITE_CHUNK: usize = 1024 * 1024;
/// After a failure the recorder leaves the disk alone this long: a full or failing disk must not
/// cost a new segment and a log line per packet.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Counters shared with the metrics registry and the APIs.
#[derive(Debug, Clone, Default)]
pub struct RecorderStats {
    pub records: Counter,
    pub bytes: Counter,
    /// Records covered by the last successful fsync.
    pub records_durable: Gauge,
    pub errors: Counter,
    /// Packets not recorded because the recording failed (the live data path carried them).
    pub records_lost: Counter,
}

/// A record as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub received_ns: u64,
    pub packet_type: PacketType,
    pub packet: &'a [u8],
}

fn direction_octet(packet_type: PacketType) -> u8 {
    match packet_type {
        PacketType::Telemetry => 0,
        PacketType::Telecommand => 1,
    }
}

pub fn encode_record(out: &mut Vec<u8>, received_ns: u64, packet_type: PacketType, packet: &[u8]) {
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&(packet.len() as u32).to_le_bytes());
    header[4..12].copy_from_slice(&received_ns.to_le_bytes());
    header[12] = direction_octet(packet_type);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..16]);
    crc.update(packet);
    header[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(packet);
}

/// The outcome of reading one record from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record(RecordView<'a>, usize),
    /// The buffer ends inside the record.
    Incomplete {
        needed: usize,
    },
    Corrupt,
}

pub fn decode_record(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < RECORD_HEADER_LEN {
        return Decoded::Incomplete {
            needed: RECORD_HEADER_LEN,
        };
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if !(PRIMARY_HEADER_LEN + 1..=MAX_PACKET_LEN).contains(&len) || buf[12] > 1 {
        return Decoded::Corrupt;
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Decoded::Incomplete { needed: total };
    }
    let packet = &buf[RECORD_HEADER_LEN..total];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[..16]);
    crc.update(packet);
    if crc.finalize() != u32::from_le_bytes(buf[16..20].try_into().unwrap()) {
        return Decoded::Corrupt;
    }
    let view = RecordView {
        received_ns: u64::from_le_bytes(buf[4..12].try_into().unwrap()),
        packet_type: if buf[12] == 0 {
            PacketType::Telemetry
        } else {
            PacketType::Telecommand
        },
        packet,
    };
    Decoded::Record(view, total)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub index: u64,
    pub first_ns: u64,
    pub size: u64,
}

impl SegmentInfo {
    pub fn file_name(&self) -> String {
        segment_file_name(self.index, self.first_ns)
    }
}

fn segment_file_name(index: u64, first_ns: u64) -> String {
    format!("{index:010}-{first_ns:020}.{SEGMENT_EXTENSION}")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXTENSION}"))?;
    let (index, first) = stem.split_once('-')?;
    Some((index.parse().ok()?, first.parse().ok()?))
}

/// The segments in `dir`, oldest first; other files are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentInfo>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((index, first_ns)) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        segments.push(SegmentInfo {
            path: entry.path(),
            index,
            first_ns,
            size: entry.metadata()?.len(),
        });
    }
    segments.sort_by_key(|s| s.index);
    Ok(segments)
}

/// What start-up recovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records_in_last_segment: u64,
    pub truncated_bytes: u64,
    /// Damaged octets between good records of the last segment: kept, and skipped on playback.
    pub damaged_bytes: u64,
}

/// Cuts the last segment back to its last complete record. Only the last segment can be torn:
/// older ones were fsync'd when they were rotated. Damage in the middle (good records follow it)
/// is not a torn tail: it stays, and only the records it hit are lost.
pub fn recover(dir: &Path) -> io::Result<Recovery> {
    let segments = list_segments(dir)?;
    let Some(last) = segments.last() else {
        return Ok(Recovery::default());
    };
    let mut reader = match playback::SegmentReader::open(&last.path) {
        Ok(reader) => Some(reader),
        // Torn inside the magic: the crash came right after the segment was created.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => None,
        Err(e) => return Err(e),
    };
    let mut records = 0;
    if let Some(reader) = reader.as_mut() {
        while reader.next_record()?.is_some() {
            records += 1;
        }
    }
    let valid_len = reader.as_ref().map_or(0, |r| r.position());
    let mut recovery = Recovery {
        segments: segments.len(),
        records_in_last_segment: records,
        truncated_bytes: last.size - valid_len.min(last.size),
        damaged_bytes: reader.as_ref().map_or(0, |r| r.skipped()),
    };
    if records == 0 {
        fs::remove_file(&last.path)?;
        sync_dir(dir)?;
        recovery.segments -= 1;
    } else if recovery.truncated_bytes > 0 {
        let file = OpenOptions::new().write(true).open(&last.path)?;
        file.set_len(valid_len)?;
        file.sync_all()?;
    }
    Ok(recovery)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct OpenSegment {
    file: File,
    /// Octets in the file plus those pending in the write buffer.
    len: u64,
    records: u64,
}

/// Appends records; owned by the recorder thread.
pub struct Recorder {
    dir: PathBuf,
    segment_size: u64,
    next_index: u64,
    segment: Option<OpenSegment>,
    pending: Vec<u8>,
    /// Records handed to the OS since the last fsync, and those still in `pending`.
    unsynced_records: u64,
    pending_records: u64,
    durable_records: u64,
    /// Set by a failure: until then, packets are counted as lost instead of written.
    retry_at: Option<Instant>,
    retry_after: Duration,
    stats: RecorderStats,
}

impl Recorder {
    /// Opens the recording directory, recovering from a crash first. New records go to a new
    /// segment, so a recovered segment is never appended to. A directory that cannot be written
    /// is an error now, not a failure at the first packet.
    pub fn open(
        dir: &Path,
        segment_size: u64,
        stats: RecorderStats,
    ) -> io::Result<(Recorder, Recovery)> {
        fs::create_dir_all(dir)?;
        check_writable(dir)?;
        let recovery = recover(dir)?;
        let next_index = list_segments(dir)?.last().map_or(1, |s| s.index + 1);
        let recorder = Recorder {
            dir: dir.to_owned(),
            segment_size,
            next_index,
            segment: None,
            pending: Vec::with_capacity(WRITE_CHUNK + MAX_PACKET_LEN),
            unsynced_records: 0,
            pending_records: 0,
            durable_records: 0,
            retry_at: None,
            retry_after: RETRY_AFTER_FAILURE,
            stats,
        };
        Ok((recorder, recovery))
    }

    /// Appends one record to the pending buffer; on an error it is not in it. `append_batch`
    /// hands the buffer to the OS.
    fn append(
        &mut self,
        received_ns: u64,
        packet_type: PacketType,
        packet: &[u8],
    ) -> io::Result<()> {
        let record_len = (RECORD_HEADER_LEN + packet.len()) as u64;
        let full = self
            .segment
            .as_ref()
            .is_some_and(|s| s.records > 0 && s.len + record_len > self.segment_size);
        if full {
            self.close_segment()?;
        }
        if self.segment.is_none() {
            self.open_segment(received_ns)?;
        }
        let before = self.pending.len();
        encode_record(&mut self.pending, received_ns, packet_type, packet);
        let segment = self.segment.as_mut().expect("opened above");
        segment.len += (self.pending.len() - before) as u64;
        segment.records += 1;
        self.pending_records += 1;
        Ok(())
    }

    /// Appends a batch, handing full chunks to the OS. After a failure, and until the retry is
    /// due, the batch is only counted as lost.
    pub fn append_batch(&mut self, batch: &Batch) -> io::Result<()> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            self.stats.records_lost.inc_by(batch.packets.len() as u64);
            return Ok(());
        }
        for (i, packet) in batch.packets.iter().enumerate() {
            let appended = self.append(batch.received_ns, batch.packet_type, batch.bytes(packet));
            if let Err(error) = appended {
                self.stats
                    .records_lost
                    .inc_by((batch.packets.len() - i) as u64);
                return Err(error);
            }
        }
        if self.pending.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands pending records to the OS: they survive a process crash, not a power loss.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let segment = self
            .segment
            .as_mut()
            .expect("pending records have a segment");
        segment.file.write_all(&self.pending)?;
        if self.retry_at.take().is_some() {
            tracing::info!(
                dir = %self.dir.display(),
                records_lost = self.stats.records_lost.get(),
                "recording resumed"
            );
        }
        let written_from = segment.len - self.pending.len() as u64;
        start_writeback(&segment.file, written_from, self.pending.len() as u64);
        self.stats.records.inc_by(self.pending_records);
        self.stats.bytes.inc_by(self.pending.len() as u64);
        self.unsynced_records += self.pending_records;
        self.pending_records = 0;
        self.pending.clear();
        Ok(())
    }

    /// Flushes and fsyncs: everything appended so far is durable when this returns.
    pub fn sync(&mut self) -> io::Result<u64> {
        self.flush()?;
        if self.unsynced_records > 0 {
            if let Some(segment) = &self.segment {
                segment.file.sync_data()?;
            }
            self.mark_durable();
        }
        Ok(self.durable_records)
    }

    pub fn has_unsynced(&self) -> bool {
        self.unsynced_records > 0 || self.pending_records > 0
    }

    fn mark_durable(&mut self) {
        self.durable_records += self.unsynced_records;
        self.unsynced_records = 0;
        self.stats.records_durable.set(self.durable_records as i64);
    }

    fn open_segment(&mut self, first_ns: u64) -> io::Result<()> {
        let path = self.dir.join(segment_file_name(self.next_index, first_ns));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The index is taken once the file exists, whatever happens next.
        self.next_index += 1;
        if let Err(error) = file
            .write_all(SEGMENT_MAGIC)
            .and_then(|()| sync_dir(&self.dir))
        {
            // It holds no record; recovery would remove it too, but a full disk would pile
            // them up until then.
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        self.segment = Some(OpenSegment {
            file,
            len: SEGMENT_MAGIC.len() as u64,
            records: 0,
        });
        Ok(())
    }

    fn close_segment(&mut self) -> io::Result<()> {
        self.sync()?;
        self.segment = None;
        Ok(())
    }

    /// A recording failure must not stop the data path: it is logged and counted, the pending
    /// records are lost, and after a pause the recorder starts afresh in a new segment (the
    /// failed one's tail is unknown).
    fn fail(&mut self, error: io::Error) {
        tracing::error!(
            %error,
            dir = %self.dir.display(),
            retry_in_ms = self.retry_after.as_millis() as u64,
            "recording failed; packets are not recorded until the retry"
        );
        self.stats.errors.inc();
        self.stats.records_lost.inc_by(self.pending_records);
        self.pending.clear();
        self.pending_records = 0;
        self.unsynced_records = 0;
        self.segment = None;
        self.retry_at = Some(Instant::now() + self.retry_after);
    }

    fn report(&mut self, result: io::Result<()>) {
        if let Err(error) = result {
            self.fail(error);
        }
    }
}

/// Creates, syncs and removes a probe file.
fn check_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(".vfep-write-check");
    let written = File::create(&probe).and_then(|mut file| {
        file.write_all(SEGMENT_MAGIC)?;
        file.sync_all()
    });
    let removed = fs::remove_file(&probe);
    written.and(removed).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("the recording directory cannot be written: {error}"),
        )
    })
}

/// Asks the kernel to start writing a range to disk now, without waiting. Otherwise dirty pages
/// may sit in memory until the next fsync, which then has a whole interval's data to write while
/// the recorder waits; started early, the disk works while the recorder keeps appending.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours. Its result is
    // ignored: it is only a hint, the fsync that follows is what makes the data durable.
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

pub type SyncReply = oneshot::Sender<io::Result<u64>>;

/// Asks the recorder thread for an immediate fsync.
#[derive(Debug, Clone)]
pub struct RecorderHandle {
    sync_requests: mpsc::Sender<SyncReply>,
}

impl RecorderHandle {
    /// Returns the number of durable records.
    pub async fn sync(&self) -> io::Result<u64> {
        let (tx, rx) = oneshot::channel();
        let stopped = || io::Error::other("recorder stopped");
        self.sync_requests.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Runs the recorder on its own thread so file IO never blocks the async runtime. It records
/// until the batch channel closes, then flushes and fsyncs, and returns how that went.
pub fn spawn(
    mut recorder: Recorder,
    mut batches: mpsc::Receiver<Arc<Batch>>,
    fsync_interval: Duration,
    runtime: tokio::runtime::Handle,
) -> (RecorderHandle, std::thread::JoinHandle<io::Result<()>>) {
    let (sync_tx, mut sync_rx) = mpsc::channel::<SyncReply>(8);
    let thread = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            loop {
                let deadline = last_sync + fsync_interval;
                let event = runtime.block_on(async {
                    tokio::select! {
                        biased;
                        batch = batches.recv() => Event::Batch(batch),
                        Some(reply) = sync_rx.recv() => Event::Sync(reply),
                        _ = tokio::time::sleep_until(deadline.into()), if recorder.has_unsynced() => Event::Due,
                    }
                });
                let result = match event {
                    Event::Batch(None) => return recorder.sync().map(drop),
                    Event::Batch(Some(batch)) => {
                        let mut result = recorder.append_batch(&batch);
                        // Take whatever else is queued, then hand it all to the OS at once.
                        while let (Ok(()), Ok(batch)) = (&result, batches.try_recv()) {
                            result = recorder.append_batch(&batch);
                        }
                        result.and_then(|()| recorder.flush())
                    }
                    Event::Sync(reply) => {
                        let result = recorder.sync();
                        last_sync = Instant::now();
                        let outcome = match &result {
                            Ok(durable) => Ok(*durable),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        };
                        let _ = reply.send(outcome);
                        result.map(drop)
                    }
                    Event::Due => Ok(()),
                };
                recorder.report(result);
                if recorder.has_unsynced() && last_sync.elapsed() >= fsync_interval {
                    let result = recorder.sync().map(drop);
                    recorder.report(result);
                    last_sync = Instant::now();
                }
            }
        })
        .expect("spawn recorder thread");
    (
        RecorderHandle {
            sync_requests: sync_tx,
        },
        thread,
    )
}

enum Event {
    Batch(Option<Arc<Batch>>),
    Sync(SyncReply),
    Due,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PacketId, encode_packet};
    use crate::config::MIN_SEGMENT_SIZE;

    pub(crate) fn packet(n: u16, len: usize) -> Vec<u8> {
        let id = PacketId {
            packet_type: PacketType::Telemetry,
            apid: 100 + n % 3,
            sequence_count: n,
            secondary_header: false,
        };
        encode_packet(id, &vec![n as u8; len], true)
    }

    fn read_all(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for segment in list_segments(dir).unwrap() {
            let mut reader = playback::SegmentReader::open(&segment.path).unwrap();
            while let Some(record) = reader.next_record().unwrap() {
                out.push((record.received_ns, record.packet.to_vec()));
            }
        }
        out
    }

    #[test]
    fn record_round_trips_and_detects_corruption() {
        let mut buf = Vec::new();
        let p = packet(7, 30);
        encode_record(&mut buf, 42, PacketType::Telecommand, &p);
        let Decoded::Record(view, used) = decode_record(&buf) else {
            panic!()
        };
        assert_eq!(used, buf.len());
        assert_eq!(view.received_ns, 42);
        assert_eq!(view.packet_type, PacketType::Telecommand);
        assert_eq!(view.packet, &p[..]);
        assert_eq!(
            decode_record(&buf[..buf.len() - 1]),
            Decoded::Incomplete { needed: buf.len() }
        );
        buf[RECORD_HEADER_LEN + 3] ^= 1;
        assert_eq!(decode_record(&buf), Decoded::Corrupt);
    }

    #[test]
    fn rotates_by_size_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) = Recorder::open(dir.path(), 1000, RecorderStats::default()).unwrap();
        for n in 0..50 {
            recorder
                .append(n, PacketType::Telemetry, &packet(n as u16, 40))
                .unwrap();
        }
        recorder.sync().unwrap();
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() > 3, "{segments:?}");
        assert!(segments.iter().all(|s| s.size <= 1000));
        // 48-octet packets make 68-octet records: 14 fit after the magic in 1000 octets.
        assert_eq!(segments[1].first_ns, 14);
        let records = read_all(dir.path());
        assert_eq!(records.len(), 50);
        for (n, (time, bytes)) in records.iter().enumerate() {
            assert_eq!(*time, n as u64);
            assert_eq!(bytes, &packet(n as u16, 40));
        }
    }

    #[test]
    fn recovery_cuts_a_torn_tail_and_keeps_every_complete_record() {
        let dir = tempfile::tempdir().unwrap();
        let stats = RecorderStats::default();
        let (mut recorder, _) = Recorder::open(dir.path(), 1 << 20, stats.clone()).unwrap();
        for n in 0..10 {
            recorder
                .append(n, PacketType::Telemetry, &packet(n as u16, 25))
                .unwrap();
        }
        assert_eq!(recorder.sync().unwrap(), 10);
        assert_eq!(stats.records_durable.get(), 10);
        drop(recorder);
        let path = list_segments(dir.path()).unwrap()[0].path.clone();
        let complete = fs::read(&path).unwrap();

        // A torn tail: half of an 11th record, as a crash mid-write leaves it.
        let mut torn = Vec::new();
        encode_record(&mut torn, 10, PacketType::Telemetry, &packet(10, 25));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);

        let (_, recovery) = Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        assert_eq!(recovery.records_in_last_segment, 10);
        assert_eq!(recovery.truncated_bytes, (torn.len() / 2) as u64);
        assert_eq!(fs::read(&path).unwrap(), complete);

        // A corrupt last record (bit flip in the packet) is cut as well.
        let mut flipped = complete.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x10;
        fs::write(&path, &flipped).unwrap();
        let (_, recovery) = Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        assert_eq!(recovery.records_in_last_segment, 9);
        assert_eq!(read_all(dir.path()).len(), 9);
    }

    /// Damage on disk in the middle of a segment (bit rot, a bad sector) costs the records it
    /// hit, not the rest of the segment: playback skips to the next good record, and recovery
    /// does not take it for a torn tail.
    #[test]
    fn damage_in_the_middle_costs_only_the_records_it_hit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) =
            Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        for n in 0..30 {
            recorder
                .append(n, PacketType::Telemetry, &packet(n as u16, 40))
                .unwrap();
        }
        recorder.sync().unwrap();
        drop(recorder);
        let path = list_segments(dir.path()).unwrap()[0].path.clone();
        let mut bytes = fs::read(&path).unwrap();
        // 48-octet packets in 68-octet records after the 8-octet magic.
        let record = |n: usize| SEGMENT_MAGIC.len() + n * 68;
        bytes[record(5) + 30] ^= 0xFF; // a flipped packet octet: bad CRC
        bytes[record(12)..record(12) + 4].copy_from_slice(&u32::MAX.to_le_bytes()); // bad length
        bytes[record(26)..record(26) + 4].copy_from_slice(&60_000u32.to_le_bytes()); // runs past the end
        fs::write(&path, &bytes).unwrap();

        let expected: Vec<u64> = (0..30).filter(|n| ![5, 12, 26].contains(n)).collect();
        let mut reader = playback::SegmentReader::open(&path).unwrap();
        let mut times = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            assert_eq!(record.packet, &packet(record.received_ns as u16, 40)[..]);
            times.push(record.received_ns);
        }
        assert_eq!(times, expected);
        assert_eq!(reader.skipped(), 3 * 68);
        assert_eq!(reader.position(), bytes.len() as u64);

        let (_, recovery) = Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
        assert_eq!(recovery.damaged_bytes, 3 * 68);
        assert_eq!(recovery.records_in_last_segment, 27);
        let after: Vec<u64> = read_all(dir.path()).iter().map(|(t, _)| *t).collect();
        assert_eq!(after, expected);
    }

    /// A small tmpfs: the one way to get a disk that fills up. Mounting needs root, as the test
    /// command (hack/test.sh) runs.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(options: &str) -> Tmpfs {
            let dir = tempfile::tempdir().unwrap();
            let fs = Tmpfs(dir);
            fs.run_mount(&["-t", "tmpfs", "-o", options, "vfep-test"]);
            fs
        }

        fn remount(&self, options: &str) {
            self.run_mount(&["-o", &format!("remount,{options}")]);
        }

        fn run_mount(&self, args: &[&str]) {
            let status = std::process::Command::new("mount")
                .args(args)
                .arg(self.path())
                .status()
                .expect("run mount");
            assert!(status.success(), "mount {args:?} (needs root)");
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.path())
                .status();
        }
    }

    fn batch_of(first: u16, count: u16) -> Batch {
        let mut data = Vec::new();
        let mut packets = Vec::new();
        for n in first..first + count {
            let bytes = packet(n, 200);
            packets.push(crate::bus::PacketRef {
                offset: data.len() as u32,
                len: bytes.len() as u32,
                apid: 100,
                channel: 0,
            });
            data.extend_from_slice(&bytes);
        }
        let mut batch = Batch::new(PacketType::Telemetry, 1, data.into());
        batch.packets = packets;
        batch
    }

    /// Found by a user: on a full disk every packet made a new empty segment, all with the same
    /// index, and a log line.
    #[test]
    fn a_full_disk_costs_one_failure_per_retry_not_a_segment_per_packet() {
        let disk = Tmpfs::mount("size=256k");
        let stats = RecorderStats::default();
        let (mut recorder, _) =
            Recorder::open(disk.path(), MIN_SEGMENT_SIZE, stats.clone()).unwrap();
        recorder.retry_after = Duration::from_secs(3600);
        let mut sent = 0;
        for _ in 0..100 {
            let result = recorder
                .append_batch(&batch_of(sent, 20))
                .and_then(|()| recorder.flush());
            recorder.report(result);
            sent += 20;
        }
        assert_eq!(stats.errors.get(), 1);
        assert_eq!(
            stats.records.get() + stats.records_lost.get(),
            u64::from(sent)
        );
        assert!(stats.records_lost.get() > 0);
        let segments = list_segments(disk.path()).unwrap();
        let indices: Vec<u64> = segments.iter().map(|s| s.index).collect();
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
        assert!(indices.len() < 10, "{indices:?}");
        assert!(
            segments
                .iter()
                .all(|s| s.size >= SEGMENT_MAGIC.len() as u64),
            "{segments:?}"
        );
        // What was handed to the OS before the disk filled is there, in order.
        let kept = read_all(disk.path());
        assert!(!kept.is_empty());
        for (n, (_, bytes)) in kept.iter().enumerate() {
            assert_eq!(bytes, &packet(n as u16, 200));
        }

        // With room again, the next retry records, in a new segment with the next index.
        disk.remount("size=4m");
        recorder.retry_after = Duration::ZERO;
        recorder.retry_at = Some(Instant::now());
        recorder.append_batch(&batch_of(sent, 20)).unwrap();
        recorder.sync().unwrap();
        let after = list_segments(disk.path()).unwrap();
        assert!(after.last().unwrap().index > *indices.last().unwrap());
        let records = read_all(disk.path());
        assert_eq!(records.len(), kept.len() + 20);
        assert_eq!(records.last().unwrap().1, packet(sent + 19, 200));
        assert_eq!(stats.errors.get(), 1);
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_refused_at_open() {
        let disk = Tmpfs::mount("ro,size=64k");
        let error = Recorder::open(disk.path(), MIN_SEGMENT_SIZE, RecorderStats::default())
            .err()
            .expect("a read-only recording directory is refused");
        assert!(
            error
                .to_string()
                .starts_with("the recording directory cannot be written: "),
            "{error}"
        );
    }

    #[test]
    fn a_segment_torn_inside_its_magic_is_removed_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) =
            Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        recorder
            .append(1, PacketType::Telemetry, &packet(1, 10))
            .unwrap();
        recorder.sync().unwrap();
        drop(recorder);
        fs::write(dir.path().join(segment_file_name(2, 5)), b"VFEP").unwrap();
        let (mut recorder, recovery) =
            Recorder::open(dir.path(), 1 << 20, RecorderStats::default()).unwrap();
        assert_eq!(recovery.segments, 1);
        recorder
            .append(9, PacketType::Telemetry, &packet(2, 10))
            .unwrap();
        recorder.sync().unwrap();
        let indices: Vec<_> = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.index)
            .collect();
        assert_eq!(indices, [1, 2]);
        assert_eq!(read_all(dir.path()).len(), 2);
    }
}
