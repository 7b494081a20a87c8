//! The daemon's enrolment store writer: a background thread that carries out the core's
//! [`Command::SaveEnrolment`](metalvpc_protocol::supernode::Command::SaveEnrolment), so the
//! packet path never waits for a disk. A burst is coalesced: whatever queued while one write
//! ran goes into the next, one read-modify-write per community ([`crate::enrol::update`]).
//! [`Writer::flush`] waits until everything queued is on disk (the daemon calls it before a
//! reload re-reads the store, and when it stops).

use crate::enrol;
use metalvpc_protocol::supernode::EnrolmentRecord;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

enum Msg {
    Save(EnrolmentRecord),
    /// A whole small file to replace (atomically, mode 600): the last one queued for a path
    /// wins.
    File(PathBuf, Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// The writer thread's handle.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// Starts the thread; `report` is called on it with each batch's outcome per community
    /// (the store file, how many enrolments, and the error if the write failed).
    pub fn start(
        state_dir: PathBuf,
        report: impl Fn(&Path, usize, Option<anyhow::Error>) + Send + 'static,
    ) -> Writer {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("enrol-store".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let mut saves: BTreeMap<String, Vec<EnrolmentRecord>> = BTreeMap::new();
                    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
                    let mut flushes = Vec::new();
                    for m in batch {
                        match m {
                            Msg::Save(r) => saves.entry(r.community.clone()).or_default().push(r),
                            Msg::File(path, bytes) => {
                                files.insert(path, bytes);
                            }
                            Msg::Flush(done) => flushes.push(done),
                        }
                    }
                    for (path, bytes) in files {
                        if let Err(e) = metalvpc_common::write_atomic(&path, &bytes, 0o600) {
                            tracing::error!("could not write {}: {e}", path.display());
                        }
                    }
                    for (community, records) in saves {
                        let file = enrol::path(&state_dir, &community);
                        let r = enrol::update(&file, |s| {
                            for r in &records {
                                enrol::apply(s, r);
                            }
                            Ok(())
                        });
                        report(&file, records.len(), r.err());
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            })
            .expect("spawn the enrolment store writer");
        Writer { tx }
    }

    /// Queues an enrolment for the store.
    pub fn save(&self, r: EnrolmentRecord) {
        let _ = self.tx.send(Msg::Save(r));
    }

    /// Queues a small file to replace whole (the MAC claims, [`crate::macs_file`]).
    pub fn write_file(&self, path: PathBuf, bytes: Vec<u8>) {
        let _ = self.tx.send(Msg::File(path, bytes));
    }

    /// Waits until everything queued before is written (or failed and was reported).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_protocol::PublicKey;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_burst_of_enrolments_is_coalesced_into_few_writes_and_all_are_kept() {
        let d = std::env::temp_dir().join(format!("mvpc-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let w = writes.clone();
        let writer = Writer::start(d.clone(), move |f, n, e| {
            assert!(e.is_none(), "{f:?}: {e:?}");
            w.lock().unwrap().push(n);
        });
        for i in 0..200u32 {
            writer.save(EnrolmentRecord {
                community: if i % 2 == 0 { "prod" } else { "test" }.into(),
                key: PublicKey([(i % 256) as u8; 32]),
                address: std::net::IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
                name: format!("n{i}"),
                token: None,
            });
        }
        writer.flush();
        let writes = writes.lock().unwrap().clone();
        assert_eq!(writes.iter().sum::<usize>(), 200);
        assert!(writes.len() < 200, "one write per enrolment: {writes:?}");
        assert_eq!(
            enrol::load(&enrol::path(&d, "prod")).unwrap().node.len(),
            100
        );
        assert_eq!(
            enrol::load(&enrol::path(&d, "test")).unwrap().node.len(),
            100
        );
        println!("200 enrolments in {} writes", writes.len());
        let _ = std::fs::remove_dir_all(&d);
    }
}
