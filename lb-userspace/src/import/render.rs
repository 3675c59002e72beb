//! The translated config as blocks of keys, and their text: every block
//! opens with a comment naming the file and line it came from.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::Pos;

/// One TOML table: its header, where it came from, and its keys with values
/// already written as TOML.
#[derive(Debug, Clone)]
pub struct Block {
    pub header: String,
    pub what: String,
    pub source: Pos,
    pub keys: Vec<(String, String)>,
}

impl Block {
    pub fn new(header: &str, what: String, source: Pos) -> Block {
        Block {
            header: header.to_string(),
            what,
            source,
            keys: Vec::new(),
        }
    }

    /// Sets a key; a later line of the source wins, as in HAProxy.
    pub fn set(&mut self, key: &str, value: String) {
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.keys.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# {}: {}", self.source, self.what);
        let _ = writeln!(out, "{}", self.header);
        for (key, value) in &self.keys {
            let _ = writeln!(out, "{key} = {value}");
        }
        out.push('\n');
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub name: String,
    /// Where the VIP:port was bound, for conflict messages.
    pub origin: String,
    pub block: Block,
    pub timeouts: Option<Block>,
    pub check: Option<Block>,
    pub backends: Vec<Block>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub block: Block,
    pub users: Vec<Block>,
    /// Users whose password could not be carried over: (name, role).
    pub pending: Vec<(String, &'static str)>,
}

#[derive(Debug, Clone)]
pub struct Vrrp {
    pub block: Block,
    pub vips: Vec<Ipv4Addr>,
    pub tracks: Vec<Block>,
}

#[derive(Debug, Clone, Default)]
pub struct Lbd {
    pub nodes: Vec<Block>,
    pub services: Vec<Service>,
    pub vrrp: Vec<Vrrp>,
    pub admin: Option<Admin>,
    pub redirects: Vec<Block>,
}

/// A TOML basic string.
pub fn quote(text: &str) -> String {
    toml_edit::Value::from(text).to_string().trim().to_string()
}

/// A hash `[[admin.user]] password_hash` takes: argon2 in PHC format.
pub fn argon2_hash(hash: &str) -> bool {
    hash.starts_with("$argon2")
        && argon2::PasswordHash::new(hash).is_ok_and(|h| h.hash.is_some() && h.salt.is_some())
}

pub fn render(lbd: &Lbd, sources: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `lbd import` from {}.\n# Check it with `lbd check`; what could not be \
         carried over was listed when it was written.\n",
        sources.join(", ")
    );
    for node in &lbd.nodes {
        node.write(&mut out);
    }
    for service in &lbd.services {
        service.block.write(&mut out);
        if let Some(timeouts) = &service.timeouts {
            timeouts.write(&mut out);
        }
        if let Some(check) = &service.check {
            check.write(&mut out);
        }
        for backend in &service.backends {
            backend.write(&mut out);
        }
    }
    for vrrp in &lbd.vrrp {
        vrrp.block.write(&mut out);
        for track in &vrrp.tracks {
            track.write(&mut out);
        }
    }
    if let Some(admin) = &lbd.admin {
        // [admin] without a user is refused, so until `lbd passwd` has made
        // hashes the page is written commented out.
        let mut text = String::new();
        admin.block.write(&mut text);
        for user in &admin.users {
            user.write(&mut text);
        }
        for (name, role) in &admin.pending {
            let _ = writeln!(
                text,
                "# Password not carried over: run `lbd passwd` and put its hash here.\n\
                 # [[admin.user]]\n# name = {}\n# role = {}\n# password_hash = \"...\"\n",
                quote(name),
                quote(role)
            );
        }
        if admin.users.is_empty() {
            out.push_str(
                "# The stats page needs at least one user with a password_hash; uncomment\n\
                 # this part once `lbd passwd` has made the hashes.\n",
            );
            for line in text.lines() {
                if line.is_empty() || line.starts_with('#') {
                    let _ = writeln!(out, "{line}");
                } else {
                    let _ = writeln!(out, "# {line}");
                }
            }
            out.push('\n');
        } else {
            out.push_str(&text);
        }
    }
    for redirect in &lbd.redirects {
        redirect.write(&mut out);
    }
    out
}
