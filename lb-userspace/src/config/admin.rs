//! `[admin]` (the stats/admin page and its users) and `[[redirect]]` (the
//! http-to-https redirect listeners).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::ops::Range;
use std::time::Duration;

use super::report::Report;
use super::schema::{Admin, AdminUser, Redirect, Role};
use super::section::{At, Section, text};
use super::values;

/// The page reloads itself this often unless `refresh` says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// `[admin]` as written, each field `None` when its error was reported.
pub(super) struct AdminDraft {
    pub path: String,
    pub listen: Option<At<SocketAddrV4>>,
    pub refresh: Option<Duration>,
    pub users: Vec<UserDraft>,
}

pub(super) struct UserDraft {
    pub path: String,
    pub name: Option<At<String>>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
}

pub(super) struct RedirectDraft {
    pub path: String,
    pub listen: Option<At<SocketAddrV4>>,
}

/// Reads `[admin]`; `None` when absent (no page) or not a table (reported).
pub(super) fn read_admin(root: &mut Section, report: &mut Report) -> Option<AdminDraft> {
    let mut section = root.table(report, "admin").ok()??;
    let listen = section.required(report, "listen", text(values::socket_address));
    let refresh = section.or_default(report, "refresh", DEFAULT_REFRESH, text(values::duration));
    let header = section.span.clone();
    let users: Vec<UserDraft> = section
        .array_of_tables(report, "user")
        .into_iter()
        .map(|user| read_user(user, report))
        .collect();
    if users.is_empty() {
        report.push(
            header,
            "admin.user",
            "no users: add an [[admin.user]] with name, role and password_hash \
             (`lbd passwd` prints a hash), or remove [admin]",
        );
    }
    let draft = AdminDraft {
        path: section.path.clone(),
        listen,
        refresh,
        users,
    };
    section.finish(report);
    unique_users(&draft, report);
    Some(draft)
}

fn read_user(mut section: Section, report: &mut Report) -> UserDraft {
    let roles = [("admin", Role::Admin), ("readonly", Role::Readonly)];
    let draft = UserDraft {
        name: section.required(report, "name", text(user_name)),
        role: section
            .required(report, "role", text(|t| values::choice(t, &roles, &[])))
            .map(|at| at.value),
        password_hash: section
            .required(report, "password_hash", text(password_hash))
            .map(|at| at.value),
        path: section.path.clone(),
    };
    section.finish(report);
    draft
}

/// Reads every `[[redirect]]`.
pub(super) fn read_redirects(root: &mut Section, report: &mut Report) -> Vec<RedirectDraft> {
    root.array_of_tables(report, "redirect")
        .into_iter()
        .map(|mut section| {
            let draft = RedirectDraft {
                listen: section.required(report, "listen", text(values::socket_address)),
                path: section.path.clone(),
            };
            section.finish(report);
            draft
        })
        .collect()
}

/// User names travel in HTTP basic auth (no `:`) and in logs.
fn user_name(text: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if !text.is_empty() && text.len() <= 64 && text.chars().all(valid) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid user name `{text}`: use 1 to 64 characters from A-Z, a-z, 0-9, \
             `.`, `_`, `-` and `@`"
        ))
    }
}

/// An argon2 PHC string such as `lbd passwd` prints; a plain password or
/// another scheme is refused so a typo never leaves an account open.
fn password_hash(text: &str) -> Result<String, String> {
    let usage = "make one with `lbd passwd`; it looks like \"$argon2id$v=19$m=19456,t=2,p=1$...\"";
    let parsed = argon2::PasswordHash::new(text)
        .map_err(|e| format!("not a password hash in PHC format ({e}); {usage}"))?;
    let algorithm = parsed.algorithm.as_str();
    if !matches!(algorithm, "argon2id" | "argon2i" | "argon2d") {
        return Err(format!(
            "the hash is made with `{algorithm}`; only argon2 hashes are accepted: {usage}"
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(format!("the hash has no salt or no output; {usage}"));
    }
    // The parameters must be ones argon2 can run with.
    argon2::Params::try_from(&parsed)
        .map_err(|e| format!("the hash has unusable argon2 parameters ({e}); {usage}"))?;
    Ok(text.to_string())
}

fn unique_users(draft: &AdminDraft, report: &mut Report) {
    let mut seen: HashMap<&str, &Option<Range<usize>>> = HashMap::new();
    for user in &draft.users {
        let Some(name) = &user.name else { continue };
        if let Some(first) = seen.get(name.value.as_str()) {
            let line = report.line_of(first);
            report.push(
                name.span.clone(),
                &format!("{}.name", user.path),
                format!(
                    "duplicate user `{}`: already defined on line {line}",
                    name.value
                ),
            );
        } else {
            seen.insert(&name.value, &name.span);
        }
    }
}

impl AdminDraft {
    pub fn build(self) -> Option<Admin> {
        Some(Admin {
            listen: self.listen?.value,
            refresh: self.refresh?,
            users: self
                .users
                .into_iter()
                .map(|user| {
                    Some(AdminUser {
                        name: user.name?.value,
                        role: user.role?,
                        password_hash: user.password_hash?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        })
    }
}

impl RedirectDraft {
    pub fn build(self) -> Option<Redirect> {
        Some(Redirect {
            listen: self.listen?.value,
        })
    }
}
