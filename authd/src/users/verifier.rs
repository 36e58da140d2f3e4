//! Password verification (and hashing of new passwords) off the async runtime, with
//! bounded memory.
//!
//! A fixed number of worker threads ("slots") verify digests, each with an argon2 scratch
//! buffer taken from a shared pool of at most `slots` buffers; a buffer is reused while jobs
//! keep coming and freed [`KEEP_BUFFER`] after its last one. Jobs wait in
//! a bounded queue; when it is full the caller gets [`VerifyError::Busy`] at once, which
//! the HTTP layer turns into 503 + `Retry-After`. So a login flood costs at most
//! `slots × memory` and never grows the heap.
//!
//! Unknown and disabled users are verified against a dummy digest with the same
//! parameters as real ones, so response time does not reveal whether a user exists.

use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Block;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::hash::{DigestError, PasswordDigest, hash_password, unmatchable_digest};
use crate::config::Argon2Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("too many logins in progress; try again shortly")]
    Busy,
    #[error("password verification workers are gone")]
    Stopped,
}

/// Why a new password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("{0}")]
    Pool(#[from] VerifyError),
    #[error("{0}")]
    Digest(#[from] DigestError),
}

enum Job {
    Verify {
        password: Zeroizing<Vec<u8>>,
        digest: Arc<PasswordDigest>,
        reply: oneshot::Sender<bool>,
    },
    Hash {
        password: Zeroizing<Vec<u8>>,
        params: Argon2Config,
        reply: oneshot::Sender<Result<String, DigestError>>,
    },
}

/// Cloneable handle to the verification pool.
#[derive(Clone)]
pub struct PasswordVerifier {
    tx: SyncSender<Job>,
    dummy: Arc<PasswordDigest>,
}

impl std::fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordVerifier")
    }
}

impl PasswordVerifier {
    /// Starts `slots` worker threads with room for `queue` waiting jobs. The dummy digest
    /// uses `params`, the parameters new hashes get.
    pub fn start(slots: usize, queue: usize, params: &Argon2Config) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let buffers = Arc::new(Buffers::default());
        for i in 0..slots.max(1) {
            let rx = Arc::clone(&rx);
            let buffers = Arc::clone(&buffers);
            let spawned = std::thread::Builder::new()
                .name(format!("pw-verify-{i}"))
                .spawn(move || worker(&rx, &buffers));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start password verification thread");
            }
        }
        let dummy = PasswordDigest::parse(&unmatchable_digest(params))
            .ok()
            .unwrap_or(PasswordDigest::Bcrypt(
                // Only reached with invalid configured params, which validation refuses.
                "$2b$12$C6UzMDM.H6dfI/f/IKxGhuBK3JbU3Yfu2IlQ0vH8gBUF.SwgBb0vW".into(),
            ));
        Self {
            tx,
            dummy: Arc::new(dummy),
        }
    }

    /// Verifies `password` against `digest`, or against the dummy digest when `None`
    /// (unknown or disabled user: same cost, always false).
    pub async fn verify(
        &self,
        password: &str,
        digest: Option<Arc<PasswordDigest>>,
    ) -> Result<bool, VerifyError> {
        let real = digest.is_some();
        let digest = digest.unwrap_or_else(|| Arc::clone(&self.dummy));
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Verify {
            password: Zeroizing::new(password.as_bytes().to_vec()),
            digest,
            reply,
        })?;
        let ok = rx.await.map_err(|_| VerifyError::Stopped)?;
        Ok(ok && real)
    }

    /// Hashes a new password with `params` on the pool (admin tools: D-Bus), so hashing
    /// shares the same memory bound as logins.
    pub async fn hash(&self, password: &str, params: &Argon2Config) -> Result<String, HashError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Hash {
            password: Zeroizing::new(password.as_bytes().to_vec()),
            params: params.clone(),
            reply,
        })?;
        Ok(rx.await.map_err(|_| VerifyError::Stopped)??)
    }

    fn submit(&self, job: Job) -> Result<(), VerifyError> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(VerifyError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(VerifyError::Stopped),
        }
    }
}

/// How long an argon2 buffer is kept after its last job: logins one after another (a
/// household signing in to several apps) reuse it instead of faulting in 64 MiB each time.
const KEEP_BUFFER: Duration = Duration::from_secs(2);

/// Argon2 buffers between jobs, with when each was last used. There are never more than
/// the workers (each takes one for a job and puts it back after), so memory stays bounded by
/// `slots × memory`.
#[derive(Default)]
struct Buffers(Mutex<Vec<(Vec<Block>, Instant)>>);

impl Buffers {
    fn take(&self) -> Vec<Block> {
        self.0
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .map(|(blocks, _)| blocks)
            .unwrap_or_default()
    }

    fn put(&self, blocks: Vec<Block>) {
        if let Ok(mut b) = self.0.lock() {
            b.push((blocks, Instant::now()));
        }
    }

    /// Frees the buffers unused for [`KEEP_BUFFER`] (a 64 MiB buffer is mmapped by glibc, so
    /// dropping it returns it to the OS at once); returns how long until the next one expires
    /// (`None`: the pool is empty) and how many it freed.
    fn free_expired(&self) -> (Option<Duration>, usize) {
        let Ok(mut b) = self.0.lock() else {
            return (None, 0);
        };
        let now = Instant::now();
        let before = b.len();
        b.retain(|(_, used)| now.duration_since(*used) < KEEP_BUFFER);
        let next = b
            .iter()
            .map(|(_, used)| KEEP_BUFFER.saturating_sub(now.duration_since(*used)))
            .min();
        (next, before - b.len())
    }
}

fn worker(rx: &Mutex<std::sync::mpsc::Receiver<Job>>, buffers: &Buffers) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            // The worker waiting on the queue (the others wait for it) also frees idle buffers,
            // so it wakes when the next one expires, or every KEEP_BUFFER (one may have been
            // put back while it waited).
            loop {
                let (next, freed) = buffers.free_expired();
                if freed > 0 && next.is_none() {
                    // Logins have stopped: give back the heap their connections freed too.
                    crate::memory::trim_heap();
                }
                let wait = next.map_or(KEEP_BUFFER, |d| d.max(Duration::from_millis(10)));
                match guard.recv_timeout(wait) {
                    Ok(job) => break job,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        match job {
            Job::Verify {
                password,
                digest,
                reply,
            } => {
                let mut blocks = buffers.take();
                let ok = digest.verify(&password, &mut blocks);
                let _ = reply.send(ok);
                buffers.put(blocks);
            }
            Job::Hash {
                password,
                params,
                reply,
            } => {
                let _ = reply.send(hash_password(&password, &params));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::hash::hash_password;

    #[test]
    fn buffers_are_reused_while_fresh_and_freed_when_idle() {
        let b = Buffers::default();
        b.put(vec![Block::default(); 8]);
        let (next, freed) = b.free_expired();
        assert!(next.is_some_and(|d| d <= KEEP_BUFFER) && freed == 0);
        assert_eq!(b.take().len(), 8, "a fresh buffer is handed out again");
        let old = Instant::now().checked_sub(KEEP_BUFFER).unwrap();
        b.0.lock().unwrap().push((vec![Block::default(); 8], old));
        assert_eq!(b.free_expired(), (None, 1), "an idle one is freed");
        assert!(b.take().is_empty());
    }

    fn cheap() -> Argon2Config {
        Argon2Config {
            memory: 1024,
            iterations: 1,
            parallelism: 1,
            ..Argon2Config::default()
        }
    }

    #[tokio::test]
    async fn verifies_and_dummy_is_always_false() {
        let v = PasswordVerifier::start(1, 4, &cheap());
        let d = Arc::new(PasswordDigest::parse(&hash_password(b"pw", &cheap()).unwrap()).unwrap());
        assert_eq!(v.verify("pw", Some(d.clone())).await, Ok(true));
        assert_eq!(v.verify("nope", Some(d)).await, Ok(false));
        assert_eq!(v.verify("pw", None).await, Ok(false));
    }

    #[tokio::test]
    async fn hashes_on_the_pool() {
        let v = PasswordVerifier::start(1, 4, &cheap());
        let h = v.hash("new pw", &cheap()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        let d = Arc::new(PasswordDigest::parse(&h).unwrap());
        assert_eq!(v.verify("new pw", Some(d)).await, Ok(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_answers_busy_instead_of_growing() {
        // Expensive enough that the queue fills before the first job ends.
        let heavy = Argon2Config {
            memory: 32 * 1024,
            iterations: 4,
            parallelism: 1,
            ..Argon2Config::default()
        };
        let v = PasswordVerifier::start(1, 2, &heavy);
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let v = v.clone();
            tasks.push(tokio::spawn(async move { v.verify("x", None).await }));
        }
        let mut busy = 0;
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                Err(VerifyError::Busy) => busy += 1,
                Ok(false) => done += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(busy >= 8, "busy={busy} done={done}");
        assert!((1..=4).contains(&done), "busy={busy} done={done}");
    }
}
