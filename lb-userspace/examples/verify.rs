//! Loads the XDP program into the kernel (no attach) and prints the verifier's
//! verdict: a quick check while editing lb-ebpf. Needs root.
use aya::{EbpfLoader, programs::Xdp};

fn main() -> anyhow::Result<()> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("maglev", 4 * 257)
        .map_max_entries("flows", 1024)
        .map_max_entries("half_open", 1024)
        .map_max_entries("persist", 1024)
        .load(lb_userspace::objects::LB)?;
    let prog: &mut Xdp = ebpf.program_mut("lb").expect("program lb").try_into()?;
    match prog.load() {
        Ok(()) => println!("verifier accepted program lb"),
        Err(e) => {
            println!("verifier rejected program lb: {e:#?}");
            std::process::exit(1);
        }
    }
    Ok(())
}
