//! haproxy.cfg as a typed model: sections, the directives lb can translate
//! pulled out into fields, everything else kept with its line so the
//! translation can list it. `defaults` are applied here, so a proxy carries
//! what HAProxy would run with.

use super::{Diagnostic, Pos};

/// One line of the file split into words, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub line: usize,
    pub words: Vec<String>,
}

impl Directive {
    pub fn keyword(&self) -> &str {
        &self.words[0]
    }
    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
}

/// A value and the line that set it (a `defaults` line when inherited).
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub line: usize,
    pub value: T,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Frontend,
    Backend,
    Listen,
}

impl ProxyKind {
    pub fn word(self) -> &'static str {
        match self {
            ProxyKind::Frontend => "frontend",
            ProxyKind::Backend => "backend",
            ProxyKind::Listen => "listen",
        }
    }
    fn accepts_traffic(self) -> bool {
        self != ProxyKind::Backend
    }
    fn has_servers(self) -> bool {
        self != ProxyKind::Frontend
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub line: usize,
    /// None for `:443` and `*:443` (all addresses).
    pub address: Option<String>,
    pub port: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub line: usize,
    pub name: String,
    pub address: String,
    pub port: Option<String>,
    pub check: bool,
    /// inter, fastinter, downinter, rise, fall, port, weight, verify, sni...
    pub values: Vec<(String, String)>,
    pub disabled: bool,
    pub backup: bool,
    pub ssl: bool,
    /// Parameters with no lb meaning, as written.
    pub unknown: Vec<String>,
}

impl Server {
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Server parameters that take a value; the others are flags.
const VALUED_PARAMS: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "port",
    "verify",
    "sni",
    "check-sni",
    "maxconn",
    "minconn",
    "maxqueue",
    "slowstart",
    "id",
    "cookie",
    "addr",
    "agent-port",
    "agent-inter",
    "on-error",
    "error-limit",
    "observe",
    "resolvers",
    "init-addr",
    "crt",
    "ca-file",
    "source",
    "track",
];
const KNOWN_VALUED: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "port",
    "verify",
    "sni",
    "check-sni",
];
const KNOWN_FLAGS: &[&str] = &["check", "disabled", "backup", "ssl", "check-ssl", "enabled"];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Proxy {
    pub kind: Option<ProxyKind>,
    pub name: String,
    pub line: usize,
    pub mode: Option<At<String>>,
    pub binds: Vec<Bind>,
    pub balance: Option<At<String>>,
    pub default_backend: Option<At<String>>,
    /// `use_backend NAME [if|unless COND]`.
    pub use_backends: Vec<At<(String, Vec<String>)>>,
    pub servers: Vec<Server>,
    /// `default-server` parameters, applied under each server's own.
    pub default_server: Vec<String>,
    pub ssl_hello_chk: Option<usize>,
    pub httpchk: Option<At<Vec<String>>>,
    pub http_checks: Vec<Directive>,
    /// `timeout client|server|connect|check|...` by name.
    pub timeouts: Vec<(String, At<String>)>,
    pub stick_table: Option<At<Vec<String>>>,
    pub stick_rules: Vec<Directive>,
    pub stats: Vec<Directive>,
    pub acls: Vec<Directive>,
    pub redirects: Vec<Directive>,
    /// Directives the translation has no rule for.
    pub other: Vec<Directive>,
}

impl Proxy {
    pub fn kind(&self) -> ProxyKind {
        self.kind.unwrap_or(ProxyKind::Listen)
    }
    pub fn timeout(&self, name: &str) -> Option<&At<String>> {
        self.timeouts
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, at)| at)
    }
    pub fn mode_is_tcp(&self) -> bool {
        // HAProxy's own default mode is tcp.
        self.mode.as_ref().is_none_or(|m| m.value == "tcp")
    }
    pub fn stats_enabled(&self) -> bool {
        self.stats.iter().any(|d| {
            d.args()
                .first()
                .is_some_and(|a| a == "enable" || a == "uri")
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Password {
    /// `insecure-password`: plain text, never carried into lbd.toml.
    Insecure,
    /// `password HASH` (crypt(3) format).
    Hash(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub line: usize,
    pub name: String,
    pub password: Option<Password>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Userlist {
    pub line: usize,
    pub name: String,
    pub users: Vec<User>,
    /// group name -> its members named in `group G users a,b`.
    pub groups: Vec<(String, Vec<String>)>,
    pub other: Vec<Directive>,
}

impl Userlist {
    pub fn members(&self, group: &str) -> Vec<&str> {
        let mut members: Vec<&str> = self
            .groups
            .iter()
            .filter(|(g, _)| g == group)
            .flat_map(|(_, users)| users.iter().map(String::as_str))
            .collect();
        for user in &self.users {
            if user.groups.iter().any(|g| g == group) {
                members.push(&user.name);
            }
        }
        members
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HaproxyConfig {
    pub file: String,
    pub global: Vec<Directive>,
    /// Directives of `defaults` sections that no field took.
    pub defaults_other: Vec<Directive>,
    pub proxies: Vec<Proxy>,
    pub userlists: Vec<Userlist>,
    /// Other sections (`peers`, `resolvers`, `mailers`, `cache`, ...).
    pub other_sections: Vec<Directive>,
}

impl HaproxyConfig {
    pub fn proxy(&self, name: &str, kind_ok: impl Fn(ProxyKind) -> bool) -> Option<&Proxy> {
        self.proxies
            .iter()
            .find(|p| p.name == name && kind_ok(p.kind()))
    }
}

/// Splits a line into words as HAProxy does: blanks separate, `#` starts a
/// comment, quotes group, backslash escapes.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("the line ends with a lone backslash".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed on this line".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[derive(Clone, Copy, PartialEq)]
enum Current {
    None,
    Global,
    Defaults,
    Proxy,
    Userlist,
    Other,
}

/// Parses haproxy.cfg text. Errors are things that make the file's meaning
/// unclear (a directive outside any section, a server without an address,
/// two proxies of one name); anything merely untranslatable is kept for the
/// translation to list.
pub fn parse(text: &str, file: &str) -> Result<HaproxyConfig, Vec<Diagnostic>> {
    let mut config = HaproxyConfig {
        file: file.to_string(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    let error = |line: usize, what: String, why: &str| Diagnostic {
        at: Pos::new(file, line),
        what,
        why: why.to_string(),
    };
    let mut defaults = Proxy::default();
    let mut current = Current::None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let words = match split_words(raw) {
            Ok(words) if words.is_empty() => continue,
            Ok(words) => words,
            Err(why) => {
                errors.push(error(line, raw.trim().to_string(), &why));
                continue;
            }
        };
        let directive = Directive { line, words };
        let keyword = directive.keyword();
        if keyword.starts_with('.') {
            errors.push(error(
                line,
                format!("`{keyword}`"),
                "conditional blocks and directives are resolved by HAProxy at start-up; \
                 import the config as it runs (without them)",
            ));
            continue;
        }
        match keyword {
            "global" => current = Current::Global,
            "defaults" => {
                // A new defaults section starts from nothing (HAProxy >= 1.x).
                defaults = Proxy {
                    name: directive.args().first().cloned().unwrap_or_default(),
                    line,
                    ..Default::default()
                };
                current = Current::Defaults;
            }
            "frontend" | "backend" | "listen" => {
                let kind = match keyword {
                    "frontend" => ProxyKind::Frontend,
                    "backend" => ProxyKind::Backend,
                    _ => ProxyKind::Listen,
                };
                let Some(name) = directive.args().first() else {
                    errors.push(error(
                        line,
                        format!("`{keyword}`"),
                        "the section has no name",
                    ));
                    current = Current::Other;
                    continue;
                };
                let duplicate = config.proxies.iter().find(|p| {
                    &p.name == name
                        && (p.kind().accepts_traffic() && kind.accepts_traffic()
                            || p.kind().has_servers() && kind.has_servers())
                });
                if let Some(first) = duplicate {
                    errors.push(error(
                        line,
                        format!("{keyword} `{name}`"),
                        &format!(
                            "the name is already used by the {} on line {}; HAProxy refuses \
                             this too, rename one",
                            first.kind().word(),
                            first.line
                        ),
                    ));
                }
                let mut proxy = defaults.clone();
                proxy.kind = Some(kind);
                proxy.name = name.clone();
                proxy.line = line;
                proxy.other.clear();
                config.proxies.push(proxy);
                current = Current::Proxy;
            }
            "userlist" => {
                let name = directive.args().first().cloned().unwrap_or_default();
                config.userlists.push(Userlist {
                    line,
                    name,
                    users: Vec::new(),
                    groups: Vec::new(),
                    other: Vec::new(),
                });
                current = Current::Userlist;
            }
            "peers" | "resolvers" | "mailers" | "cache" | "program" | "http-errors" | "ring"
            | "fcgi-app" | "crt-store" | "traces" | "log-forward" => {
                config.other_sections.push(directive);
                current = Current::Other;
            }
            _ => match current {
                Current::None => errors.push(error(
                    line,
                    format!("`{}`", directive.text()),
                    "this line is outside any section (global, defaults, frontend, backend, \
                     listen, userlist); is a section line missing above it?",
                )),
                Current::Global => config.global.push(directive),
                Current::Defaults => {
                    if let Some(other) = take(&mut defaults, directive, false, file, &mut errors) {
                        config.defaults_other.push(other);
                    }
                }
                Current::Proxy => {
                    let proxy = config.proxies.last_mut().expect("a proxy section is open");
                    if let Some(other) = take(proxy, directive, true, file, &mut errors) {
                        proxy.other.push(other);
                    }
                }
                Current::Userlist => {
                    let list = config.userlists.last_mut().expect("a userlist is open");
                    read_userlist_line(list, directive);
                }
                Current::Other => {}
            },
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Files a directive under its field; returns it when no field takes it.
fn take(
    proxy: &mut Proxy,
    directive: Directive,
    in_proxy: bool,
    file: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<Directive> {
    let line = directive.line;
    let args = directive.args().to_vec();
    let first = args.first().map(String::as_str).unwrap_or("");
    match directive.keyword() {
        "mode" if !args.is_empty() => {
            proxy.mode = Some(At {
                line,
                value: args[0].clone(),
            })
        }
        "balance" if !args.is_empty() => {
            proxy.balance = Some(At {
                line,
                value: args[0].clone(),
            })
        }
        "timeout" if args.len() >= 2 => proxy.timeouts.push((
            args[0].clone(),
            At {
                line,
                value: args[1].clone(),
            },
        )),
        "option" if first == "ssl-hello-chk" => proxy.ssl_hello_chk = Some(line),
        "option" if first == "httpchk" => {
            proxy.httpchk = Some(At {
                line,
                value: args[1..].to_vec(),
            })
        }
        "option" if first == "tcp-check" => {}
        "http-check" => proxy.http_checks.push(directive),
        "default-server" => proxy.default_server.extend(args),
        "default_backend" if in_proxy && !args.is_empty() => {
            proxy.default_backend = Some(At {
                line,
                value: args[0].clone(),
            })
        }
        "use_backend" if in_proxy && !args.is_empty() => proxy.use_backends.push(At {
            line,
            value: (args[0].clone(), args[1..].to_vec()),
        }),
        "bind" if in_proxy => match parse_bind(&directive) {
            Ok(bind) => proxy.binds.push(bind),
            Err(why) => errors.push(Diagnostic {
                at: Pos::new(file, line),
                what: format!("`{}`", directive.text()),
                why,
            }),
        },
        "server" if in_proxy => match parse_server(&directive, &proxy.default_server) {
            Ok(server) => proxy.servers.push(server),
            Err(why) => errors.push(Diagnostic {
                at: Pos::new(file, line),
                what: format!("`{}`", directive.text()),
                why,
            }),
        },
        "stick-table" => {
            proxy.stick_table = Some(At {
                line,
                value: args.clone(),
            })
        }
        "stick" => proxy.stick_rules.push(directive),
        "stats" => proxy.stats.push(directive),
        "acl" => proxy.acls.push(directive),
        "redirect" => proxy.redirects.push(directive),
        _ => return Some(directive),
    }
    None
}

fn parse_bind(directive: &Directive) -> Result<Bind, String> {
    let Some(spec) = directive.args().first() else {
        return Err("`bind` needs ADDRESS:PORT".into());
    };
    let Some((address, port)) = spec.rsplit_once(':') else {
        return Err(format!("`{spec}` has no port; write ADDRESS:PORT"));
    };
    if port.is_empty() {
        return Err(format!("`{spec}` has no port; write ADDRESS:PORT"));
    }
    let address = match address {
        "" | "*" | "0.0.0.0" => None,
        a => Some(a.to_string()),
    };
    Ok(Bind {
        line: directive.line,
        address,
        port: port.to_string(),
        options: directive.args()[1..].to_vec(),
    })
}

fn parse_server(directive: &Directive, defaults: &[String]) -> Result<Server, String> {
    let args = directive.args();
    let (Some(name), Some(spec)) = (args.first(), args.get(1)) else {
        return Err("a server needs a name and an address: `server NAME ADDRESS:PORT ...`".into());
    };
    if VALUED_PARAMS.contains(&spec.as_str()) || KNOWN_FLAGS.contains(&spec.as_str()) {
        return Err(format!(
            "server `{name}` has no address (`{spec}` is a parameter); write \
             `server {name} ADDRESS:PORT {spec} ...`"
        ));
    }
    let (address, port) = match spec.rsplit_once(':') {
        Some((a, p)) => (a.to_string(), Some(p.to_string())),
        None => (spec.clone(), None),
    };
    let mut server = Server {
        line: directive.line,
        name: name.clone(),
        address,
        port,
        check: false,
        values: Vec::new(),
        disabled: false,
        backup: false,
        ssl: false,
        unknown: Vec::new(),
    };
    let params: Vec<&String> = defaults.iter().chain(&args[2..]).collect();
    let mut iter = params.into_iter();
    while let Some(param) = iter.next() {
        let param = param.as_str();
        if VALUED_PARAMS.contains(&param) {
            let Some(value) = iter.next() else {
                return Err(format!("`{param}` of server `{name}` has no value"));
            };
            if KNOWN_VALUED.contains(&param) {
                server.values.push((param.to_string(), value.clone()));
            } else {
                server.unknown.push(format!("{param} {value}"));
            }
            continue;
        }
        match param {
            "check" => server.check = true,
            "no-check" => server.check = false,
            "disabled" => server.disabled = true,
            "enabled" => server.disabled = false,
            "backup" => server.backup = true,
            "no-backup" => server.backup = false,
            "ssl" | "check-ssl" => server.ssl = true,
            other => server.unknown.push(other.to_string()),
        }
    }
    Ok(server)
}

fn read_userlist_line(list: &mut Userlist, directive: Directive) {
    let args = directive.args();
    match (directive.keyword(), args.first()) {
        ("group", Some(group)) => {
            let mut members = Vec::new();
            if let (Some(kw), Some(names)) = (args.get(1), args.get(2))
                && kw == "users"
            {
                members = names.split(',').map(str::to_string).collect();
            }
            list.groups.push((group.clone(), members));
        }
        ("user", Some(name)) => {
            let mut user = User {
                line: directive.line,
                name: name.clone(),
                password: None,
                groups: Vec::new(),
            };
            let mut rest = args[1..].iter();
            while let Some(word) = rest.next() {
                match (word.as_str(), rest.next()) {
                    ("insecure-password", Some(_)) => user.password = Some(Password::Insecure),
                    ("password", Some(hash)) => user.password = Some(Password::Hash(hash.clone())),
                    ("groups", Some(groups)) => {
                        user.groups = groups.split(',').map(str::to_string).collect()
                    }
                    _ => {}
                }
            }
            list.users.push(user);
        }
        _ => list.other.push(directive),
    }
}
