//! Prints the argon2id digest of the password read from stdin, with the parameters
//! `halos-authctl` gives new users (`$argon2id$v=19$m=65536,t=3,p=4$…`): the benchmark's
//! users file is written without building the CLI (a release build less on a fresh clone).
//!
//! `--repeat N` also times N hashes with one reused buffer, as the daemon's hash workers do,
//! and prints `hash_ms <median> min <fastest>` on stderr: the benchmark compares a login's latency with it.

use std::io::BufRead;
use std::time::Instant;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

fn main() {
    let repeat: usize = match std::env::args().nth(1).as_deref() {
        Some("--repeat") => std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .expect("--repeat N"),
        _ => 1,
    };
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .expect("a password on stdin");
    let password = password.trim_end_matches(['\r', '\n']);
    let (memory, iterations, parallelism) = (65536, 3, 4);
    let params = Params::new(memory, iterations, parallelism, Some(32)).expect("parameters");
    let mut blocks = vec![Block::default(); params.block_count()];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("random salt");
    let mut out = [0u8; 32];
    let mut took = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        argon2
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut blocks)
            .expect("argon2");
        took.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    if repeat > 1 {
        eprintln!("hash_ms {:.2} min {:.2}", took[took.len() / 2], took[0]);
    }
    println!(
        "$argon2id$v=19$m={memory},t={iterations},p={parallelism}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    );
}
