//! Test hosts in network namespaces: a namespace joined to this host by a veth pair, so a
//! process inside it has its own, non-loopback address (needs root and iproute2); and the
//! helpers every process test shares (a kill-on-drop guard, process lookup, the demo graph).

#![allow(dead_code)] // each test file uses the part it needs

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};

/// A `kiln scheduler` on an ephemeral loopback port (plus `extra` flags), killed on drop, and
/// the address it printed.
pub fn start_scheduler(extra: &[&str]) -> (Guard, String) {
    let (guard, address, _) = start_scheduler_reading(extra);
    (guard, address)
}

/// [`start_scheduler`], also handing back its standard output after the address line (the
/// rest of the banner, e.g. the dashboard's link).
pub fn start_scheduler_reading(extra: &[&str]) -> (Guard, String, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("Scheduler at ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    assert!(address.starts_with("tcp://127.0.0.1:"), "{address}");
    (Guard(child), address, stdout)
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A network namespace with a veth link to this host: `host_ip` on the host's end, `ns_ip`
/// inside. Removed on drop.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    host_if: String,
    /// This host's address on the link.
    pub host_ip: String,
    /// The namespace's address on the link.
    pub ns_ip: String,
}

impl Netns {
    /// A namespace on subnet `10.<net>.<tag % 200 + 10>.0/30`; tests pass different `net`s so
    /// that two test binaries running at once never share a subnet. `None` without privileges.
    pub fn create(net: u8, tag: u32) -> Option<Netns> {
        let name = format!("kiln-{net}-{tag}");
        let host_if = format!("k{net}x{tag}a");
        let ns_if = format!("k{net}x{tag}b");
        let subnet = 10 + tag % 200;
        let host_ip = format!("10.{net}.{subnet}.1");
        let ns_ip = format!("10.{net}.{subnet}.2");
        let ok = sh(&["ip", "netns", "add", &name])
            && sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])
            && sh(&["ip", "link", "set", &ns_if, "netns", &name])
            && sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])
            && sh(&["ip", "link", "set", &host_if, "up"])
            && sh(&["ip", "netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])
            && sh(&["ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])
            && sh(&["ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let ns = Netns { name, host_if, host_ip, ns_ip };
        ok.then_some(ns)
    }

    /// Brings the host's end of the link up or down (a network cut).
    pub fn link(&self, up: bool) {
        assert!(sh(&["ip", "link", "set", &self.host_if, if up { "up" } else { "down" }]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// The effective user id, from `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Kills a child when the test ends, whatever happens (a nanny's worker follows it).
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes whose command line mentions `needle` (arguments joined by spaces; zombies
/// excluded).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
        if !zombie && String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The demo's grid of delayed calls, summed (the `kiln` binary registers these kernel ids).
pub fn grid_total(side: i64) -> kiln::delayed::Delayed<i64> {
    use kiln::delayed::{collect, func1, func2};
    let f = func2("f", |a: &i64, b: &i64| a * b + 1).portable("kiln.demo.f");
    let g = func2("g", |a: &i64, b: &i64| a - b).portable("kiln.demo.g");
    let sum = func1("sum", |v: &Vec<i64>| v.iter().sum::<i64>()).portable("kiln.demo.sum");
    let mut parts = Vec::new();
    for a in 0..side {
        for b in 0..side {
            parts.push(if a < b { f.call(a, b) } else { g.call(a, b) });
        }
    }
    sum.call(collect(parts))
}
