//! Prints the argon2id digest of the password read from stdin, with the parameters
//! `halos-authctl` gives new users (`$argon2id$v=19$m=65536,t=3,p=4$…`): the benchmark's
//! users file is written without building the CLI (a release build less on a fresh clone).

use std::io::BufRead;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

fn main() {
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .expect("a password on stdin");
    let password = password.trim_end_matches(['\r', '\n']);
    let (memory, iterations, parallelism) = (65536, 3, 4);
    let params = Params::new(memory, iterations, parallelism, Some(32)).expect("parameters");
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("random salt");
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .expect("argon2");
    println!(
        "$argon2id$v=19$m={memory},t={iterations},p={parallelism}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    );
}
