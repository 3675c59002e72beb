//! The peer bench's HTTP backends: Debian's nginx, one per backend
//! namespace, serving one small static file. Everything it writes (pid,
//! temp directories) stays in the lab directory, and it logs to stderr only,
//! so nothing of the host's nginx install is touched.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::Lab;

/// The page every backend serves: small, so the bench measures connections
/// and packets, not bulk transfer; the backend's name is in it.
pub fn page(backend: &str) -> String {
    format!("lb peer bench: answered by {backend}\n")
}

/// nginx.conf for one backend listening on `listen`, with its files under
/// `dir`. One worker: three backends already share two cores with the
/// client and the balancer. Keep-alive connections are never closed by the
/// server during a run, so the keep-alive rows measure requests only.
pub fn config(dir: &Path, listen: SocketAddrV4) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log stderr warn;\n\
         events {{\n\
         \tworker_connections 16384;\n\
         }}\n\
         http {{\n\
         \taccess_log off;\n\
         \tdefault_type text/plain;\n\
         \tkeepalive_requests 100000000;\n\
         \tkeepalive_timeout 120s;\n\
         \tclient_body_temp_path {d}/client_body;\n\
         \tproxy_temp_path {d}/proxy;\n\
         \tfastcgi_temp_path {d}/fastcgi;\n\
         \tuwsgi_temp_path {d}/uwsgi;\n\
         \tscgi_temp_path {d}/scgi;\n\
         \tserver {{\n\
         \t\tlisten {listen} backlog=4096;\n\
         \t\troot {d}/www;\n\
         \t}}\n\
         }}\n"
    )
}

/// Starts nginx for backend `n` of `lab` (in namespace `be<n>`, on the
/// backend's address and `port`) and waits until it serves its page.
pub fn start(lab: &Lab, n: usize, port: u16) -> Result<()> {
    let node = format!("be{n}");
    let listen = SocketAddrV4::new(lab.backend_addr(n), port);
    let dir: PathBuf = lab.dir().join(format!("nginx-{node}"));
    let www = dir.join("www");
    std::fs::create_dir_all(&www).with_context(|| format!("could not create {}", www.display()))?;
    std::fs::write(www.join("index.html"), page(&node))
        .with_context(|| format!("could not write {}", www.display()))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(&dir, listen))
        .with_context(|| format!("could not write {}", conf.display()))?;
    let prefix = format!("{}/", dir.display());
    let child = lab
        .spawn_in(
            &node,
            &[
                "nginx",
                "-e",
                "stderr",
                "-p",
                prefix.as_str(),
                "-c",
                &conf.to_string_lossy(),
            ],
        )
        .with_context(|| {
            format!("could not start nginx on {node} (is the nginx package installed?)")
        })?;
    lab.adopt(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match lab.run_in(&node, move || get_page(listen, Duration::from_secs(1)))? {
            Ok(body) if body == page(&node) => return Ok(()),
            Ok(body) => bail!("nginx on {node} serves {body:?}, not the bench's page"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "nginx on {node} did not serve {listen} within 10 s (last: {last}); its log is {}",
        lab.dir().join(format!("{node}-nginx.log")).display()
    )
}

/// One `GET /` on a fresh connection that the server closes; returns the
/// body. For readiness probes, in the caller's namespace.
pub fn get_page(target: SocketAddrV4, timeout: Duration) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&target.into(), timeout)
        .with_context(|| format!("could not connect to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .with_context(|| format!("could not send a request to {target}"))?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .with_context(|| format!("{target} did not answer in full"))?;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{target} sent no HTTP answer: {text:?}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{target} answered {:?}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_every_file_in_the_lab_directory() {
        let text = config(
            Path::new("/tmp/lb-lab-x/nginx-be1"),
            "198.51.100.11:80".parse().unwrap(),
        );
        assert!(
            text.contains("listen 198.51.100.11:80 backlog=4096;"),
            "{text}"
        );
        assert!(text.contains("root /tmp/lb-lab-x/nginx-be1/www;"), "{text}");
        for line in text.lines().filter(|l| l.contains(" /")) {
            assert!(line.contains("/tmp/lb-lab-x/nginx-be1"), "{line}");
        }
        assert!(text.contains("access_log off;"));
        assert!(text.contains("daemon off;"));
    }
}
