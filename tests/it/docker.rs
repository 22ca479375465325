//! The container story on a real Docker engine: the `FROM scratch` watchdog image
//! built from the host's musl binary (`--target from-host`), function images built from
//! the templates and the example on a busybox root filesystem (no image can be pulled
//! here, so the base is made with `docker import`), fwatchdog as PID 1, the API key
//! from a read-only bind-mounted secret and from a Swarm secret, the image's
//! HEALTHCHECK, and `docker stop` draining an in-flight request.
//!
//! Needs: a Docker engine; the musl binary
//! (`rustup target add x86_64-unknown-linux-musl && cargo build --release --target
//! x86_64-unknown-linux-musl`); a static busybox (`apt-get install -y busybox-static`).
//! Without one of them each test skips (see `util::skip`).
//!
//! Every image, container, service and secret is named after the test run and removed
//! when the test ends, pass or fail; containers publish on 127.0.0.1 only, on a port
//! Docker picks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::templates::{repo, run_for};
use crate::util::{eventually, random_bytes, request, skip, TempDir};

const MUSL_BINARY: &str = "target/x86_64-unknown-linux-musl/release/fwatchdog";
const BUILD_HINT: &str =
    "rustup target add x86_64-unknown-linux-musl && cargo build --release --target x86_64-unknown-linux-musl";
const SECRET: &str = "secret-api-key";

/// Why Docker tests cannot run here, checked once per test process.
fn unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let info = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
        if !info.is_ok_and(|o| o.status.success()) {
            return Some("docker not available".into());
        }
        let bin = repo().join(MUSL_BINARY);
        if !bin.exists() {
            return Some(format!("docker tests need the musl binary {MUSL_BINARY}: run `{BUILD_HINT}`"));
        }
        if let Some(newer) = newest_source_after(&bin) {
            let _ = writeln!(std::io::stderr(), "WARNING: {} is newer than {MUSL_BINARY}; the docker tests run the old binary (`{BUILD_HINT}`)", newer.display());
        }
        if busybox().is_none() {
            return Some("docker tests need a static busybox for the base image: `apt-get install -y busybox-static`".into());
        }
        None
    })
    .as_deref()
}

fn newest_source_after(bin: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let mut stack = vec![repo().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
            {
                return Some(p);
            }
        }
    }
    None
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn docker_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args).stdin(Stdio::null());
    c
}

fn docker(args: &[&str]) -> Output {
    run_for(&mut docker_cmd(args), Duration::from_secs(180))
}

/// Runs docker and returns its trimmed stdout; panics with everything it said if it fails.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What one test made in Docker, removed on drop in reverse order of dependence.
struct Fixture {
    id: String,
    tmp: TempDir,
    images: Vec<String>,
    /// Every image id our builds printed, removed after the tags.
    layers: Vec<String>,
    containers: Vec<String>,
    services: Vec<String>,
    secrets: Vec<String>,
    /// Set when this test initialised the swarm: leave it (and its bridge) afterwards.
    swarm: Option<SwarmInit>,
}

struct SwarmInit {
    had_gwbridge: bool,
}

impl Fixture {
    /// The fixture for `test`, or `None` (after `util::skip`) where Docker tests cannot run.
    fn new(test: &str) -> Option<Fixture> {
        if let Some(why) = unavailable() {
            skip(test, why);
            return None;
        }
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!(
            "fwatchdog-it-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Some(Fixture {
            id,
            tmp: TempDir::new(),
            images: Vec::new(),
            layers: Vec::new(),
            containers: Vec::new(),
            services: Vec::new(),
            secrets: Vec::new(),
            swarm: None,
        })
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.id)
    }

    /// The watchdog image, `FROM scratch`, from the host's musl binary.
    fn watchdog_image(&mut self) -> String {
        let tag = format!("{}:latest", self.name("watchdog"));
        self.images.push(tag.clone());
        let root = repo();
        self.build(&[
            "--target",
            "from-host",
            "-t",
            &tag,
            root.to_str().expect("utf8"),
        ]);
        tag
    }

    /// `docker build --no-cache`, remembering every image id it printed: the legacy
    /// builder leaves the images of stages the result does not descend from (our
    /// `host-binary`) behind, untagged. With no cache, every id is this build's own.
    fn build(&mut self, args: &[&str]) {
        let mut all = vec!["build", "--no-cache", "--force-rm"];
        all.extend_from_slice(args);
        let out = docker_ok(&all);
        self.layers.extend(
            out.lines()
                .filter_map(|l| l.trim().strip_prefix("---> "))
                .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned),
        );
    }

    /// A base image with busybox (and bash, for the bash-streaming template), made with
    /// `docker import` since nothing can be pulled.
    fn base_image(&mut self) -> String {
        let root = self.tmp.path().join("rootfs");
        for d in [
            "bin",
            "etc",
            "tmp",
            "home",
            "root",
            "usr/bin",
            "var/openfaas",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod /tmp");
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
        let bb = busybox().expect("busybox");
        copy_with_libs(&bb, &root, "bin/busybox");
        let list = Command::new(&bb)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        if let Some(bash) = ["/bin/bash", "/usr/bin/bash"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            copy_with_libs(bash, &root, "bin/bash");
        }
        let tar = self.tmp.path().join("rootfs.tar");
        let out = run_for(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tag = format!("{}:latest", self.name("base"));
        self.images.push(tag.clone());
        docker_ok(&[
            "import",
            "--change",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().expect("utf8"),
            &tag,
        ]);
        tag
    }

    /// Builds `context` (with its Dockerfile) on our watchdog and base images.
    fn function_image(&mut self, what: &str, context: &Path, watchdog: &str, base: &str) -> String {
        let tag = format!("{}:latest", self.name(what));
        self.images.push(tag.clone());
        let wd = format!("WATCHDOG_IMAGE={watchdog}");
        let bs = format!("BASE_IMAGE={base}");
        self.build(&[
            "--build-arg",
            &wd,
            "--build-arg",
            &bs,
            "-t",
            &tag,
            context.to_str().expect("utf8"),
        ]);
        tag
    }

    /// `docker run -d` with port 8080 published on 127.0.0.1 at a port Docker picks.
    fn run(&mut self, what: &str, args: &[&str], image: &str) -> Container {
        let name = self.name(what);
        self.containers.push(name.clone());
        let mut all = vec!["run", "-d", "--name", &name, "-p", "127.0.0.1::8080"];
        all.extend_from_slice(args);
        all.push(image);
        docker_ok(&all);
        let mapping = docker_ok(&["port", &name, "8080/tcp"]);
        let port = mapping
            .lines()
            .find_map(|l| l.strip_prefix("127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("docker port {name}: {mapping:?}"));
        let c = Container { name, port };
        c.wait_serving();
        c
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Failures are reported, not raised: a panic here would abort the test run.
        let quiet = |args: &[&str]| {
            let out = run_for(&mut docker_cmd(args), Duration::from_secs(120));
            let gone = String::from_utf8_lossy(&out.stderr).contains("No such image");
            if !out.status.success() && !gone {
                let _ = writeln!(
                    std::io::stderr(),
                    "cleanup: docker {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        };
        for s in &self.services {
            quiet(&["service", "rm", s]);
        }
        for s in &self.services {
            // A removed service's task containers go away on their own; wait for them so
            // the secret and image are free.
            let filter = format!("label=com.docker.swarm.service.name={s}");
            eventually(Duration::from_secs(60), || {
                docker(&["ps", "-aq", "--filter", &filter])
                    .stdout
                    .iter()
                    .all(u8::is_ascii_whitespace)
            });
        }
        for c in &self.containers {
            quiet(&["rm", "-f", "-v", c]);
        }
        for s in &self.secrets {
            quiet(&["secret", "rm", s]);
        }
        if let Some(init) = &self.swarm {
            quiet(&["swarm", "leave", "--force"]);
            if !init.had_gwbridge {
                quiet(&["network", "rm", "docker_gwbridge"]);
            }
        }
        // Function images before the images they were built from. A container that is
        // still going away (a swarm task) holds its image for a moment: retry.
        for i in self.images.iter().rev() {
            let removed = eventually(Duration::from_secs(30), || {
                let out = docker(&["rmi", "-f", i]);
                out.status.success()
                    || String::from_utf8_lossy(&out.stderr).contains("No such image")
            });
            if !removed {
                quiet(&["rmi", "-f", i]);
            }
        }
        // Most are gone with their tagged child by now; this removes the rest.
        for l in self.layers.iter().rev() {
            quiet(&["rmi", l]);
        }
    }
}

/// Copies an executable and the shared libraries it loads (none for a static one) into
/// the root file system, each at its own path.
fn copy_with_libs(bin: &Path, root: &Path, dest: &str) {
    std::fs::copy(bin, root.join(dest)).expect("copy binary");
    let Ok(ldd) = Command::new("ldd").arg(bin).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(lib) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir lib");
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
}

struct Container {
    name: String,
    port: u16,
}

impl Container {
    fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    fn exec(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(cmd);
        docker(&args)
    }

    /// Polls `/_/health` through the published port until it answers 200. Before the
    /// container listens, Docker's proxy accepts and closes at once, hence our own probe.
    fn wait_serving(&self) {
        let ok = eventually(Duration::from_secs(30), || {
            probe(self.port, "/_/health") == Some(200)
        });
        assert!(
            ok,
            "{} never became healthy on 127.0.0.1:{}:\n{}",
            self.name,
            self.port,
            self.logs()
        );
    }

    fn wait_health(&self, want: &str) {
        let ok = eventually(Duration::from_secs(30), || {
            docker(&["inspect", "-f", "{{.State.Health.Status}}", &self.name])
                .stdout
                .trim_ascii()
                == want.as_bytes()
        });
        assert!(
            ok,
            "{}: health never became {want}: {}\n{}",
            self.name,
            self.inspect("{{json .State.Health}}"),
            self.logs()
        );
    }
}

/// One GET with `Connection: close`; the status, or None if nothing sensible came back.
fn probe(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn random_key() -> String {
    random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn docker_watchdog_image_is_scratch_with_only_the_static_binary() {
    let Some(mut d) = Fixture::new("docker_watchdog_image_is_scratch_with_only_the_static_binary")
    else {
        return;
    };
    let image = d.watchdog_image();
    assert_eq!(
        docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Entrypoint}}",
            &image
        ]),
        r#"["/fwatchdog"]"#
    );
    let ports = docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.ExposedPorts}}",
        &image,
    ]);
    assert!(
        ports.contains("\"8080/tcp\"") && ports.contains("\"8081/tcp\""),
        "EXPOSE 8080 8081: {ports}"
    );
    assert_eq!(
        docker_ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", &image]),
        "2",
        "two layers: /tmp and the binary"
    );

    // Static: it runs with no libc in the image.
    let version = docker_ok(&["run", "--rm", &image, "--version"]);
    assert!(version.starts_with("fwatchdog"), "{version}");

    // Nothing in the file system but /fwatchdog (and what the runtime adds to any
    // container: /dev, /proc, /sys, /etc/hosts and friends, /.dockerenv).
    let c = d.name("files");
    d.containers.push(c.clone());
    docker_ok(&["create", "--name", &c, &image]);
    let tar = d.tmp.path().join("export.tar");
    docker_ok(&["export", "-o", tar.to_str().expect("utf8"), &c]);
    let list = run_for(
        Command::new("tar").arg("-tf").arg(&tar),
        Duration::from_secs(30),
    );
    let files: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .filter(|l| !l.is_empty() && !l.ends_with('/') && l != ".dockerenv")
        .filter(|l| {
            !["dev/", "proc/", "sys/", "etc/"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert_eq!(files, ["fwatchdog"]);
    // And /tmp, world-writable and sticky, for the lock file.
    let verbose = run_for(
        Command::new("tar").arg("-tvf").arg(&tar),
        Duration::from_secs(30),
    );
    let listing = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.trim_end().ends_with(" tmp/")),
        "/tmp with mode 1777:\n{listing}"
    );
    let copied = d.tmp.path().join("fwatchdog");
    docker_ok(&[
        "cp",
        &format!("{c}:/fwatchdog"),
        copied.to_str().expect("utf8"),
    ]);
    assert!(
        std::fs::read(&copied).expect("copied")
            == std::fs::read(repo().join(MUSL_BINARY)).expect("host binary"),
        "the image holds the host's binary"
    );
}

#[test]
fn docker_watchdog_image_runs_a_function_as_any_user_with_its_lock_file_in_tmp() {
    // scratch has no /tmp; the image ships one (1777), so the lock file can be written
    // by root and by an unprivileged user alike.
    let Some(mut d) =
        Fixture::new("docker_watchdog_image_runs_a_function_as_any_user_with_its_lock_file_in_tmp")
    else {
        return;
    };
    let image = d.watchdog_image();
    for (what, user) in [("root", "0:0"), ("nobody", "65534:65534")] {
        let c = d.run(
            what,
            &["--user", user, "-e", "fprocess=/fwatchdog --version"],
            &image,
        );
        let r = request(c.port, "POST", "/", &[], b"");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert!(
            r.text().starts_with("fwatchdog version"),
            "{what}: {}",
            r.text()
        );
        let logs = c.logs();
        assert!(
            logs.contains("Writing lock-file to: /tmp/.lock"),
            "{what}: {logs}"
        );
    }
}

#[test]
fn docker_from_host_without_the_binary_fails_at_build_time() {
    let Some(mut d) = Fixture::new("docker_from_host_without_the_binary_fails_at_build_time")
    else {
        return;
    };
    let tag = format!("{}:latest", d.name("nobinary"));
    d.images.push(tag.clone());
    let root = repo();
    let root = root.to_str().expect("utf8");
    // A binary named explicitly must exist, whichever builder runs the build.
    let out = docker(&[
        "build",
        "--no-cache",
        "--force-rm",
        "--target",
        "from-host",
        "--build-arg",
        "HOST_BINARY=target/no-such-target/release/fwatchdog",
        "-t",
        &tag,
        root,
    ]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // The legacy builder keeps the images of the steps that did succeed: ours to remove.
    d.layers.extend(
        said.lines()
            .filter_map(|l| l.trim().strip_prefix("---> "))
            .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned),
    );
    assert!(!out.status.success(), "built without a binary:\n{said}");
    assert!(said.contains("no-such-target/release/fwatchdog"), "{said}");
    // The default binary path under BuildKit (docker buildx): a missing binary for the
    // target platform fails too. (The legacy builder builds from-host on every build,
    // from source too, so it cannot fail there; the Dockerfile says so.)
    let buildx = docker(&["buildx", "version"]).status.success();
    if !buildx {
        let _ = writeln!(
            std::io::stderr(),
            "note: docker buildx is not installed; BuildKit's from-host check not exercised"
        );
        return;
    }
    let out = docker(&[
        "buildx",
        "build",
        "--load",
        "--no-cache",
        "--platform",
        "linux/riscv64",
        "--target",
        "from-host",
        "-t",
        &tag,
        root,
    ]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "built riscv64 without its binary:\n{said}"
    );
}

#[test]
fn docker_dockerfile_template_runs_as_pid1_non_root_and_turns_healthy() {
    let Some(mut d) =
        Fixture::new("docker_dockerfile_template_runs_as_pid1_non_root_and_turns_healthy")
    else {
        return;
    };
    let (watchdog, base) = (d.watchdog_image(), d.base_image());
    let image = d.function_image(
        "tpl-dockerfile",
        &repo().join("templates/dockerfile/function"),
        &watchdog,
        &base,
    );
    let c = d.run("tpl-dockerfile", &["--health-interval", "1s"], &image);

    let r = request(c.port, "POST", "/", &[], b"through docker\n");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "through docker\n"),
        "{}",
        c.logs()
    );

    let comm = c.exec(&["cat", "/proc/1/comm"]);
    assert_eq!(
        String::from_utf8_lossy(&comm.stdout).trim(),
        "fwatchdog",
        "fwatchdog is PID 1"
    );
    let uid = c.exec(&["id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "10001",
        "runs as the non-root user"
    );
    // The HEALTHCHECK is `fwatchdog --run-healthcheck`.
    assert!(c
        .inspect("{{json .Config.Healthcheck.Test}}")
        .contains("--run-healthcheck"));
    c.wait_health("healthy");
}

#[test]
fn docker_bash_streaming_template_streams_the_script_output() {
    let Some(mut d) = Fixture::new("docker_bash_streaming_template_streams_the_script_output")
    else {
        return;
    };
    let (watchdog, base) = (d.watchdog_image(), d.base_image());
    let image = d.function_image(
        "tpl-bash",
        &repo().join("templates/bash-streaming"),
        &watchdog,
        &base,
    );
    let c = d.run("tpl-bash", &[], &image);
    let r = request(c.port, "POST", "/greet", &[], b"a\nb");
    assert_eq!(r.status, 200, "{}", c.logs());
    assert_eq!(
        r.text(),
        "Hello from bash: POST /greet\n1: a\n2: b\nlines: 2\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&c.exec(&["id", "-u"]).stdout).trim(),
        "10001"
    );
}

#[test]
fn docker_stop_drains_the_in_flight_request_and_exits_0() {
    let Some(mut d) = Fixture::new("docker_stop_drains_the_in_flight_request_and_exits_0") else {
        return;
    };
    let (watchdog, base) = (d.watchdog_image(), d.base_image());
    let image = d.function_image(
        "drain",
        &repo().join("templates/dockerfile/function"),
        &watchdog,
        &base,
    );
    let c = d.run(
        "drain",
        &[
            "-e",
            "fprocess=sh -c 'echo started >&2; sleep 2; echo slow done'",
            "-e",
            "healthcheck_interval=1s",
            "-e",
            "write_timeout=10s",
        ],
        &image,
    );
    let port = c.port;
    let slow = std::thread::spawn(move || request(port, "POST", "/", &[], b""));
    assert!(
        eventually(Duration::from_secs(20), || c
            .logs()
            .contains("stderr: started")),
        "the handler never started:\n{}",
        c.logs()
    );

    let grace = 30;
    let t0 = Instant::now();
    docker_ok(&["stop", "-t", &grace.to_string(), &c.name]);
    let took = t0.elapsed();

    let r = slow.join().expect("request thread");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slow done\n"),
        "the in-flight request finished:\n{}",
        c.logs()
    );
    assert_eq!(
        c.inspect("{{.State.ExitCode}}"),
        "0",
        "clean exit, not the grace period's SIGKILL:\n{}",
        c.logs()
    );
    assert!(took < Duration::from_secs(grace), "stopped in {took:?}");
    assert!(c.logs().contains("SIGTERM"), "{}", c.logs());
}

#[test]
fn docker_example_checks_the_key_from_a_read_only_bind_mounted_secret() {
    let Some(mut d) =
        Fixture::new("docker_example_checks_the_key_from_a_read_only_bind_mounted_secret")
    else {
        return;
    };
    let (watchdog, base) = (d.watchdog_image(), d.base_image());
    let image = d.function_image(
        "apikey",
        &repo().join("examples/api-key-protected/protectedapi"),
        &watchdog,
        &base,
    );

    let key = random_key();
    let secret = d.tmp.path().join(SECRET);
    std::fs::write(&secret, format!("{key}\n")).expect("write secret");
    let mount = format!("{}:/var/openfaas/secrets/{SECRET}:ro", secret.display());
    let c = d.run("apikey", &["-v", &mount], &image);

    for (presented, status, body) in [
        (None, 401, "Access denied!\n"),
        (Some("thisiswrong"), 401, "Access denied!\n"),
        (Some(key.as_str()), 200, "Unlocked the function!\n"),
    ] {
        let headers: Vec<(&str, &str)> = presented.map(|k| ("X-Api-Key", k)).into_iter().collect();
        let r = request(c.port, "GET", "/", &headers, b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (status, body),
            "key {presented:?}:\n{}",
            c.logs()
        );
    }
    let logs = c.logs();
    assert!(
        logs.contains(&format!("/var/openfaas/secrets/{SECRET}")),
        "{logs}"
    );
    assert!(!logs.contains(&key), "the key never reaches the log");

    // Fail closed: without the secret the container exits 2 and says where it looked.
    let bare = d.name("apikey-nosecret");
    d.containers.push(bare.clone());
    let out = docker(&["run", "--name", &bare, &image]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("/var/openfaas/secrets/{SECRET}"))
            && said.contains(&format!("/run/secrets/{SECRET}")),
        "{said}"
    );
}

/// The seed page's Swarm flow: `docker secret create`, a service with `--secret`, the
/// secret at /run/secrets/, the right and a wrong key. The service publishes nothing:
/// the requests are made inside its container, to its own 127.0.0.1.
#[test]
fn docker_swarm_secret_unlocks_the_service() {
    let Some(mut d) = Fixture::new("docker_swarm_secret_unlocks_the_service") else {
        return;
    };
    match docker_ok(&["info", "-f", "{{.Swarm.LocalNodeState}}"]).as_str() {
        "inactive" => {
            let had_gwbridge = docker(&["network", "inspect", "docker_gwbridge"])
                .status
                .success();
            let init = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            if !init.status.success() {
                skip(
                    "docker_swarm_secret_unlocks_the_service",
                    &format!(
                        "docker swarm init failed: {}",
                        String::from_utf8_lossy(&init.stderr).trim()
                    ),
                );
                return;
            }
            d.swarm = Some(SwarmInit { had_gwbridge });
        }
        "active" if docker_ok(&["info", "-f", "{{.Swarm.ControlAvailable}}"]) == "true" => {}
        state => {
            skip(
                "docker_swarm_secret_unlocks_the_service",
                &format!("swarm is {state} and this node is not a manager"),
            );
            return;
        }
    }
    let (watchdog, base) = (d.watchdog_image(), d.base_image());
    let image = d.function_image(
        "swarm",
        &repo().join("examples/api-key-protected/protectedapi"),
        &watchdog,
        &base,
    );

    // `echo KEY | docker secret create secret-api-key -`, under a name of this run's.
    let key = random_key();
    let secret = d.name("secret");
    d.secrets.push(secret.clone());
    let mut create = docker_cmd(&["secret", "create", &secret, "-"]);
    let mut child = create
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker secret create");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{key}\n").as_bytes())
        .expect("write key");
    assert!(
        child.wait().expect("wait").success(),
        "docker secret create"
    );

    let service = d.name("svc");
    d.services.push(service.clone());
    let mount = format!("source={secret},target={SECRET}");
    docker_ok(&[
        "service", "create", "--detach", "--quiet", "--name", &service, "--secret", &mount, &image,
    ]);

    let filter = format!("label=com.docker.swarm.service.name={service}");
    let mut task = String::new();
    let up = eventually(Duration::from_secs(60), || {
        task = docker(&[
            "ps",
            "-q",
            "--filter",
            &filter,
            "--filter",
            "status=running",
        ])
        .stdout
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .unwrap_or_default();
        !task.is_empty()
            && docker(&[
                "exec",
                &task,
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/_/health",
            ])
            .status
            .success()
    });
    let ps = docker(&["service", "ps", "--no-trunc", &service]);
    assert!(
        up,
        "the service never served:\n{}",
        String::from_utf8_lossy(&ps.stdout)
    );
    let c = Container {
        name: task,
        port: 0,
    };

    let right = c.exec(&[
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        &format!("X-Api-Key: {key}"),
        "http://127.0.0.1:8080/",
    ]);
    assert!(
        right.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&right.stderr),
        c.logs()
    );
    assert_eq!(
        String::from_utf8_lossy(&right.stdout),
        "Unlocked the function!\n"
    );

    let wrong = c.exec(&[
        "wget",
        "-S",
        "-q",
        "-O",
        "-",
        "--header",
        "X-Api-Key: thisiswrong",
        "http://127.0.0.1:8080/",
    ]);
    assert!(!wrong.status.success(), "a wrong key must fail");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("401 Unauthorized"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    assert!(
        c.logs().contains(&format!("/run/secrets/{SECRET}")),
        "the startup log names the path used:\n{}",
        c.logs()
    );
}
