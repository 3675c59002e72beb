//! The command-line side of the control socket: `lbd backend set-state` and
//! `lbd status` send one request to the running agent and print its answer.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use super::{Answer, Request, socket_path};

/// How long the agent may take to answer (a set-state rewrites the maps of
/// one service: milliseconds).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `lbd backend set-state SERVICE/BACKEND STATE`.
pub fn set_state(config_path: &Path, node: Option<&str>, target: &str, state: &str) -> Result<()> {
    let (service, backend) = target
        .split_once('/')
        .filter(|(s, b)| !s.is_empty() && !b.is_empty())
        .ok_or_else(|| anyhow!("`{target}` is not SERVICE/BACKEND (e.g. horizon/cs1)"))?;
    let node = node_name(config_path, node)?;
    let answer = ask(
        &node,
        &Request::SetState {
            service: service.to_string(),
            backend: backend.to_string(),
            state: state.to_string(),
        },
    )?;
    println!("{}", answer.message.unwrap_or_default());
    Ok(())
}

/// `lbd status`: the agent's view as a table with `table`, else as JSON.
pub fn status(config_path: &Path, node: Option<&str>, table: bool) -> Result<()> {
    let node = node_name(config_path, node)?;
    let answer = ask(&node, &Request::Status)?;
    let status = answer
        .status
        .ok_or_else(|| anyhow!("the agent answered status without one"))?;
    if !table {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).context("printing the status")?
        );
        return Ok(());
    }
    print!(
        "{}",
        super::status_table::render(&status, std::time::SystemTime::now())
    );
    Ok(())
}

/// The node this command talks to: `--node`, else the config's choice.
fn node_name(config_path: &Path, node: Option<&str>) -> Result<String> {
    if let Some(node) = node {
        return Ok(node.to_string());
    }
    let config = crate::config::load_or_explain(config_path)?;
    Ok(config.node(None)?.0.to_string())
}

/// Sends `request` to `node`'s agent; an error answer becomes an error.
fn ask(node: &str, request: &Request) -> Result<Answer> {
    let path = socket_path(node);
    let stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no lbd is running for node {node}: {} does not exist",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
            "no lbd is running for node {node}: nobody listens on {} (left by an agent that died)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut line = serde_json::to_string(request).context("encoding the request")?;
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .with_context(|| format!("sending the request to {}", path.display()))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .with_context(|| format!("reading the agent's answer on {}", path.display()))?;
    if reply.is_empty() {
        bail!("the agent for node {node} closed the connection without answering");
    }
    let answer: Answer = serde_json::from_str(reply.trim_end())
        .with_context(|| format!("the agent sent an unreadable answer: {reply}"))?;
    if !answer.ok {
        bail!(
            "{}",
            answer
                .error
                .unwrap_or_else(|| "the agent refused without a reason".into())
        );
    }
    Ok(answer)
}
