//! keepalived.conf as a typed model. The file is a tree of `keyword args`
//! lines and `{ ... }` blocks; the blocks lb can translate (`vrrp_script`,
//! `vrrp_instance`) become structs, the rest is kept with its line.

use super::{Diagnostic, Pos};

/// One keyword line, with its block when it opens one.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub words: Vec<String>,
    pub block: Option<Vec<Node>>,
}

impl Node {
    pub fn keyword(&self) -> &str {
        &self.words[0]
    }
    pub fn arg(&self, index: usize) -> Option<&str> {
        self.words.get(index + 1).map(String::as_str)
    }
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VrrpScript {
    pub line: usize,
    pub name: String,
    pub script: Option<(usize, String)>,
    pub interval: Option<(usize, String)>,
    pub weight: Option<(usize, String)>,
    pub fall: Option<(usize, String)>,
    pub rise: Option<(usize, String)>,
    pub other: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VrrpInstance {
    pub line: usize,
    pub name: String,
    pub state: Option<(usize, String)>,
    pub interface: Option<(usize, String)>,
    pub virtual_router_id: Option<(usize, String)>,
    pub priority: Option<(usize, String)>,
    pub advert_int: Option<(usize, String)>,
    pub version: Option<(usize, String)>,
    /// (line, auth_type, auth_pass)
    pub authentication: Option<(usize, Option<String>, Option<String>)>,
    pub unicast_src_ip: Option<(usize, String)>,
    pub unicast_peers: Vec<(usize, String)>,
    pub virtual_ipaddresses: Vec<Node>,
    pub track_scripts: Vec<(usize, String)>,
    pub nopreempt: Option<usize>,
    pub preempt_delay: Option<(usize, String)>,
    pub notify: Vec<Node>,
    pub other: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeepalivedConfig {
    pub file: String,
    pub global_defs: Vec<Node>,
    pub scripts: Vec<VrrpScript>,
    pub instances: Vec<VrrpInstance>,
    /// Top-level blocks lb has no part for (virtual_server, vrrp_sync_group...).
    pub other: Vec<Node>,
}

/// Words of one line: `#` and `!` start a comment, `{` and `}` are words of
/// their own, double quotes group.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in text.chars() {
        if quoted {
            if c == '"' {
                quoted = false;
            } else {
                word.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                in_word = true;
            }
            '#' | '!' => break,
            '{' | '}' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                words.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("a double quote is not closed on this line".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Builds the block tree; unbalanced braces and `include` are errors.
pub fn parse_tree(text: &str, file: &str) -> Result<Vec<Node>, Vec<Diagnostic>> {
    let error = |line: usize, what: &str, why: String| Diagnostic {
        at: Pos::new(file, line),
        what: what.to_string(),
        why,
    };
    // The stack of open blocks: (line of the opening keyword, nodes so far).
    let mut stack: Vec<(usize, Vec<Node>)> = vec![(0, Vec::new())];
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let words = match split_words(raw) {
            Ok(words) => words,
            Err(why) => {
                errors.push(error(line, raw.trim(), why));
                continue;
            }
        };
        let mut current: Vec<String> = Vec::new();
        for word in words {
            match word.as_str() {
                "{" => {
                    if current.is_empty() {
                        // `vrrp_instance X` on one line, `{` alone on the next.
                        let parent = &mut stack.last_mut().expect("root").1;
                        match parent.pop() {
                            Some(node) if node.block.is_none() => {
                                stack.push((node.line, Vec::new()));
                                parent_push_pending(&mut stack, node);
                            }
                            other => {
                                if let Some(node) = other {
                                    stack.last_mut().expect("root").1.push(node);
                                }
                                errors.push(error(
                                    line,
                                    "`{`",
                                    "a block opens without a keyword before it".into(),
                                ));
                                return Err(errors);
                            }
                        }
                    } else {
                        let node = Node {
                            line,
                            words: std::mem::take(&mut current),
                            block: None,
                        };
                        stack.push((line, Vec::new()));
                        parent_push_pending(&mut stack, node);
                    }
                }
                "}" => {
                    flush(&mut stack, &mut current, line);
                    if stack.len() == 1 {
                        errors.push(error(
                            line,
                            "`}`",
                            "this brace closes a block that was never opened".into(),
                        ));
                        return Err(errors);
                    }
                    close(&mut stack);
                }
                _ => current.push(word),
            }
        }
        flush(&mut stack, &mut current, line);
    }
    if stack.len() > 1 {
        let (opened, _) = stack.last().expect("open block");
        errors.push(error(
            *opened,
            "unterminated block",
            format!(
                "the block opened here is never closed (the file ends with {} block(s) open); \
                 add the missing `}}`",
                stack.len() - 1
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let root = stack.pop().expect("root").1;
    let mut includes = Vec::new();
    find_includes(&root, file, &mut includes);
    if includes.is_empty() {
        Ok(root)
    } else {
        Err(includes)
    }
}

/// An opened block's keyword line waits in its parent as the last node with
/// `block = Some(vec![])`; the open frame collects the children.
fn parent_push_pending(stack: &mut [(usize, Vec<Node>)], mut node: Node) {
    node.block = Some(Vec::new());
    let parent = stack.len() - 2;
    stack[parent].1.push(node);
}

fn close(stack: &mut Vec<(usize, Vec<Node>)>) {
    let (_, children) = stack.pop().expect("open block");
    let parent = &mut stack.last_mut().expect("root").1;
    if let Some(node) = parent.last_mut() {
        node.block = Some(children);
    }
}

fn flush(stack: &mut [(usize, Vec<Node>)], current: &mut Vec<String>, line: usize) {
    if !current.is_empty() {
        stack.last_mut().expect("root").1.push(Node {
            line,
            words: std::mem::take(current),
            block: None,
        });
    }
}

fn find_includes(nodes: &[Node], file: &str, errors: &mut Vec<Diagnostic>) {
    for node in nodes {
        if node.keyword() == "include" {
            errors.push(Diagnostic {
                at: Pos::new(file, node.line),
                what: format!("`{}`", node.text()),
                why: "lbd import reads one file per node and does not follow includes; \
                      paste the included text in place and import again"
                    .into(),
            });
        }
        if let Some(block) = &node.block {
            find_includes(block, file, errors);
        }
    }
}

pub fn parse(text: &str, file: &str) -> Result<KeepalivedConfig, Vec<Diagnostic>> {
    let tree = parse_tree(text, file)?;
    let mut config = KeepalivedConfig {
        file: file.to_string(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    for node in tree {
        let name = node.arg(0).unwrap_or("").to_string();
        match (node.keyword(), &node.block) {
            ("global_defs", Some(block)) => config.global_defs.extend(block.iter().cloned()),
            ("vrrp_script", Some(block)) => {
                if let Some(first) = config.scripts.iter().find(|s| s.name == name) {
                    errors.push(duplicate(file, &node, "vrrp_script", first.line));
                }
                config.scripts.push(read_script(&node, name, block));
            }
            ("vrrp_instance", Some(block)) => {
                if let Some(first) = config.instances.iter().find(|i| i.name == name) {
                    errors.push(duplicate(file, &node, "vrrp_instance", first.line));
                }
                config.instances.push(read_instance(&node, name, block));
            }
            _ => config.other.push(node),
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn duplicate(file: &str, node: &Node, kind: &str, first: usize) -> Diagnostic {
    Diagnostic {
        at: Pos::new(file, node.line),
        what: format!("{kind} `{}`", node.arg(0).unwrap_or("")),
        why: format!("a {kind} of this name is already defined on line {first}; rename one"),
    }
}

fn value(node: &Node) -> Option<(usize, String)> {
    node.arg(0).map(|v| (node.line, v.to_string()))
}

fn read_script(node: &Node, name: String, block: &[Node]) -> VrrpScript {
    let mut script = VrrpScript {
        line: node.line,
        name,
        ..Default::default()
    };
    for child in block {
        match child.keyword() {
            // The script is the rest of the line (unquoted scripts have words).
            "script" => script.script = Some((child.line, child.words[1..].join(" "))),
            "interval" => script.interval = value(child),
            "weight" => script.weight = value(child),
            "fall" => script.fall = value(child),
            "rise" => script.rise = value(child),
            _ => script.other.push(child.clone()),
        }
    }
    script
}

fn read_instance(node: &Node, name: String, block: &[Node]) -> VrrpInstance {
    let mut instance = VrrpInstance {
        line: node.line,
        name,
        ..Default::default()
    };
    for child in block {
        let inner = child.block.as_deref().unwrap_or(&[]);
        match child.keyword() {
            "state" => instance.state = value(child),
            "interface" => instance.interface = value(child),
            "virtual_router_id" => instance.virtual_router_id = value(child),
            "priority" => instance.priority = value(child),
            "advert_int" => instance.advert_int = value(child),
            "version" => instance.version = value(child),
            "authentication" => {
                let find = |key: &str| {
                    inner
                        .iter()
                        .find(|n| n.keyword() == key)
                        .and_then(|n| n.arg(0).map(str::to_string))
                };
                instance.authentication = Some((child.line, find("auth_type"), find("auth_pass")));
            }
            "unicast_src_ip" => instance.unicast_src_ip = value(child),
            "unicast_peer" => {
                for peer in inner {
                    instance
                        .unicast_peers
                        .push((peer.line, peer.keyword().to_string()));
                }
            }
            "virtual_ipaddress" => instance.virtual_ipaddresses.extend(inner.iter().cloned()),
            "track_script" => {
                for script in inner {
                    instance
                        .track_scripts
                        .push((script.line, script.keyword().to_string()));
                }
            }
            "nopreempt" => instance.nopreempt = Some(child.line),
            "preempt_delay" => instance.preempt_delay = value(child),
            keyword if keyword.starts_with("notify") => instance.notify.push(child.clone()),
            _ => instance.other.push(child.clone()),
        }
    }
    instance
}
