//! `lbd passwd`: prints the argon2id hash of a password for
//! `[[admin.user]] password_hash`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, anyhow, bail};
use argon2::{
    Argon2, PasswordHasher,
    password_hash::{SaltString, rand_core::OsRng},
};

/// The argon2id PHC string of `password` with a fresh random salt and
/// argon2's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow!("hashing the password: {e}"))
}

/// Reads the password (twice from a terminal, once from a pipe) and prints
/// its hash.
pub fn command() -> Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let second =
            rpassword::prompt_password("Same password again: ").context("reading the password")?;
        if first != second {
            bail!("the two passwords differ; nothing printed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        bail!("the password is empty; nothing printed");
    }
    let hash = hash_password(&password)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{hash}").context("printing the hash")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::pool::matches;

    #[test]
    fn hashes_are_salted_argon2id_that_verify() {
        let a = hash_password("s3cret").unwrap();
        let b = hash_password("s3cret").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(matches(&a, "s3cret") && matches(&b, "s3cret"));
        assert!(!matches(&a, "s3cret "));
    }
}
