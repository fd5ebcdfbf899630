//! Upstream mode (`kgate bench --upstream`, `cargo xtask bench --upstream`): the
//! same rows as on loopback, direct vs nginx vs kgate (strict and batch), in front of
//! the user's own API server, with the user's (a bot's) token.
//!
//! kgate runs as the bench's child (`kgate agent`, standalone, generated config):
//! the token's user, learnt with a SelfSubjectReview, is an unbound subject that a
//! generated policy allows to read; the agent verifies the token locally against the
//! cluster's JWKS, which it reads with the same token (every service account may:
//! the `system:service-account-issuer-discovery` binding). nginx runs when it is
//! installed; otherwise its rows are left out, saying why. Nothing is installed.
//!
//! Rows: latency at fixed, low rates by default. Saturation and new connections send
//! as fast as the API server answers, so they run only with `yes` (`--yes`).
//!
//! Not here: the masking, token-check and scale rows (they need the double's seeded
//! data or a kgate built with the `bench` feature), the goals of issues 9 and 21
//! (they are loopback figures).

mod caller;

use std::{
    fs,
    net::ToSocketAddrs as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{
    Part, Setup,
    agent::{self, Caller, Durability},
    child::Child,
    client::{Get, Target},
    conns, latency, nginx,
    pki::Serving,
    report, step, targets,
};

/// The default `--path`: readable by every authenticated user
/// (`system:public-info-viewer`), so it works with any token.
pub const DEFAULT_PATH: &str = "/version";

/// What to measure, and against what.
#[derive(Clone, Debug)]
pub struct Options {
    /// `https://HOST[:PORT]` of the API server.
    pub server: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    /// The GET every row sends.
    pub path: String,
    /// Seconds per load point. Default 10 (1 with `quick`).
    pub seconds: Option<u64>,
    pub quick: bool,
    /// Parts to run; empty: latency, and saturation and connections with `yes`.
    pub only: Vec<Part>,
    /// The nginx binary; its rows are left out when it does not exist.
    pub nginx: PathBuf,
    /// Consent to the rows that load the API server as fast as it answers.
    pub yes: bool,
    /// The `kgate` binary to run as the agent.
    pub kgate: PathBuf,
    /// Where the report files go.
    pub out: PathBuf,
    /// The kgate build, for the report (`kgate version`'s first line).
    pub build: String,
}

/// The parts upstream mode runs, or why not.
fn parts(opts: &Options) -> anyhow::Result<(Vec<Part>, Vec<String>)> {
    let loud = [Part::Saturation, Part::Connections];
    if let Some(p) = opts
        .only
        .iter()
        .find(|p| !loud.contains(p) && **p != Part::Latency)
    {
        bail!(
            "--only {p:?}: not against a real cluster (the masking, identity, scale and record rows need the API-server double's data or a bench build of kgate: cargo xtask bench)"
        );
    }
    let wanted = if opts.only.is_empty() {
        vec![Part::Latency, Part::Saturation, Part::Connections]
    } else {
        opts.only.clone()
    };
    let mut skipped = Vec::new();
    let run = wanted
        .into_iter()
        .filter(|p| {
            let ok = opts.yes || !loud.contains(p);
            if !ok {
                skipped.push(format!(
                    "{p:?}: skipped; it sends requests as fast as the API server answers them. Pass --yes to run it"
                ));
            }
            ok
        })
        .collect();
    Ok((run, skipped))
}

/// Runs the bench; returns the JSON report's path.
pub fn run(opts: &Options) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kgate-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(opts, &dir));
    let _ = fs::remove_dir_all(&dir);
    result
}

async fn measure(opts: &Options, dir: &Path) -> anyhow::Result<PathBuf> {
    let (parts, skipped) = parts(opts)?;
    let server = caller::parse_server(&opts.server)?;
    let read = |p: &Path| fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let ca_pem = read(&opts.ca_file)?;
    let token = read(&opts.token_file)?.trim().to_owned();
    // Absolute: the agent runs with its own files in the temp dir.
    let ca_file = fs::canonicalize(&opts.ca_file)?;
    let token_file = fs::canonicalize(&opts.token_file)?;
    let addr = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", server.host))?
        .next()
        .with_context(|| format!("{} has no address", server.host))?;
    let direct = Target::named("direct", addr, &server.host, &server.authority, &ca_pem)?;
    let user = caller::whoami(&direct, &token).await?;
    step(&format!("the token is {user}"));
    caller::check_path(&direct, &opts.path, &token, &user).await?;

    let serving = Serving::issue(dir)?;
    let upstream = agent::Upstream {
        server: format!("https://{}", server.authority),
        ca_file: ca_file.clone(),
        token_file,
    };
    let who = Caller {
        user: user.clone(),
        audiences: caller::audiences(&token),
        writable: None,
    };
    step("starting kgate (strict and batch recording)");
    let (kgate, kgate_addr) = agent::start(
        &opts.kgate,
        dir,
        &serving,
        &upstream,
        &who,
        Durability::Strict,
    )?;
    let (kgate_batch, kgate_batch_addr) = agent::start(
        &opts.kgate,
        dir,
        &serving,
        &upstream,
        &who,
        Durability::Batch,
    )?;
    let kgate_target = Target::new("kgate", kgate_addr, &serving.ca_pem)?;
    caller::check_path(&kgate_target, &opts.path, &token, &user)
        .await
        .with_context(|| agent::tail(&dir.join("kgate-strict/kgate.log")))?;
    let nginx_note;
    let nginx: Option<(Child, Target)> = if opts.nginx.exists() {
        // nginx checks the upstream's certificate for DNS names only (OpenSSL's
        // X509_check_host), never IP addresses: for an API server dialled by IP it
        // checks `kubernetes`, a name kube-apiserver's serving certificate carries
        // (kubeadm's and the self-signed one alike).
        let server_name = if server.host.parse::<std::net::IpAddr>().is_ok() {
            "kubernetes"
        } else {
            &server.host
        };
        let (child, addr) = nginx::start(
            &opts.nginx,
            dir,
            &nginx::Upstream {
                addr: &server.authority,
                server_name,
                ca_file: &ca_file,
            },
            &serving,
        )?;
        let target = Target::new("nginx", addr, &serving.ca_pem)?;
        caller::check_path(&target, &opts.path, &token, &user)
            .await
            .with_context(|| agent::tail(&dir.join("nginx/error.log")))?;
        nginx_note = nginx::version(&opts.nginx);
        Some((child, target))
    } else {
        nginx_note = format!(
            "not installed at {}: its rows are left out (--nginx PATH names another)",
            opts.nginx.display()
        );
        step(&format!("nginx {nginx_note}"));
        None
    };
    for line in &skipped {
        step(line);
    }
    let quick = opts.quick;
    let setup = Setup {
        direct,
        nginx_pid: nginx.as_ref().map(|(c, _)| c.pid()),
        nginx: nginx.as_ref().map(|(_, t)| t.clone()),
        kgate: kgate_target,
        kgate_batch: Target::new("kgate-batch", kgate_batch_addr, &serving.ca_pem)?,
        kgate_pid: kgate.pid(),
        kgate_batch_pid: kgate_batch.pid(),
        get: Get::new(opts.path.clone(), token.clone()),
        write: None,
        bot_token: token,
        admin_token: String::new(),
        seconds: opts.seconds.unwrap_or(if quick { 1 } else { 10 }),
        quick,
        bulk: (0, 0),
        idle: conns::idle_limit(if quick { 50 } else { 200 }),
        busy: 8,
        rates: if quick { vec![20] } else { vec![20, 100] },
        saturation_concurrency: 8,
    };
    let mut machine = report::machine(&nginx_note);
    // The bench's working directory is no checkout of kgate's.
    machine["git_commit"] = json!(null);
    machine["git_dirty"] = json!(null);
    let settings = json!({
        "mode": "upstream",
        "upstream": opts.server,
        "path": opts.path,
        "user": user,
        "quick": quick,
        "seconds_per_point": setup.seconds,
        "rates": setup.rates,
        "saturation_concurrency": setup.saturation_concurrency,
        "idle_connections": setup.idle,
        "skipped": skipped,
        "kgate": format!("{}; standalone; identity (the token, an unbound subject, verified against the cluster's JWKS), a policy file allowing the user's reads, masking defaults, record log (kgate: strict durability, the default; kgate-batch: batch)", opts.build),
    });
    // The rows' own findings; the goals are loopback figures, not reported here.
    let mut findings = targets::Findings::default();
    let mut sections = Vec::new();
    if parts.contains(&Part::Latency) {
        sections.push(latency::fixed_rate(&setup, &mut findings).await?);
    }
    if parts.contains(&Part::Saturation) {
        sections.push(latency::saturation(&setup, &mut findings).await?);
    }
    if parts.contains(&Part::Connections) {
        sections.push(conns::handshakes(&setup).await);
        sections.push(conns::memory(&setup, &mut findings).await?);
    }
    let preface = format!(
        "Against {} as {user}. The network between this machine and the API server, and the API server itself, dominate the absolute figures (the direct rows); what kgate costs is the \"+\" columns and the proxy CPU and memory, next to nginx's. Proxy CPU is counted in 10 ms ticks: at low rates it is coarse.",
        opts.server
    );
    let (md, json) = report::write(&opts.out, &machine, &settings, &preface, &sections)?;
    step(&format!("wrote {} and {}", md.display(), json.display()));
    drop((nginx, kgate, kgate_batch));
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(only: &[Part], yes: bool) -> Options {
        Options {
            server: "https://api:6443".into(),
            ca_file: PathBuf::new(),
            token_file: PathBuf::new(),
            path: DEFAULT_PATH.into(),
            seconds: None,
            quick: false,
            only: only.to_vec(),
            nginx: PathBuf::new(),
            yes,
            kgate: PathBuf::new(),
            out: PathBuf::new(),
            build: String::new(),
        }
    }

    #[test]
    fn loud_parts_need_consent_and_seeded_parts_are_refused() {
        use Part::*;
        let cases: [(&[Part], bool, &[Part], usize); 5] = [
            (&[], false, &[Latency], 2),
            (&[], true, &[Latency, Saturation, Connections], 0),
            (&[Saturation], false, &[], 1),
            (&[Saturation, Latency], true, &[Saturation, Latency], 0),
            (&[Latency], false, &[Latency], 0),
        ];
        for (only, yes, want, skipped) in cases {
            let (run, why) = parts(&options(only, yes)).unwrap();
            assert_eq!(run, want, "{only:?} yes={yes}");
            assert_eq!(why.len(), skipped, "{why:?}");
        }
        for seeded in [Masking, Identity, Scale, Record] {
            assert!(parts(&options(&[Latency, seeded], true)).is_err());
        }
    }
}
