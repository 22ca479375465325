//! The function templates, without Docker: each starter handler runs under the real
//! fwatchdog with the settings its Dockerfile sets (its `ENV` lines), in a folder laid out
//! the way its `COPY` and `WORKDIR` lines lay out the image, and answers a request.
//!
//! The Dockerfile reading here is shared with `docker.rs` and `examples.rs`: it is only
//! as much of the format as our own Dockerfiles use (continuation lines, `ARG`, `FROM …
//! AS`, `ENV k=v …`, `COPY [--from=…] src… dest`, `WORKDIR`, exec-form `CMD` and
//! `HEALTHCHECK`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, request, skip, watchdog, TempDir, Watchdog, BIN};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A parsed Dockerfile: global `ARG`s and the stages in order.
#[derive(Debug)]
pub struct Dockerfile {
    pub args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

#[derive(Debug)]
pub struct Stage {
    pub from: String,
    pub name: Option<String>,
    /// (INSTRUCTION in upper case, the rest of the line).
    pub lines: Vec<(String, String)>,
}

impl Dockerfile {
    pub fn read(path: &Path) -> Dockerfile {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut df = Dockerfile {
            args: Vec::new(),
            stages: Vec::new(),
        };
        for line in logical_lines(&text) {
            let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let instr = instr.to_ascii_uppercase();
            let rest = rest.trim().to_owned();
            match (instr.as_str(), df.stages.last_mut()) {
                ("FROM", _) => {
                    let words: Vec<&str> = rest
                        .split_whitespace()
                        .filter(|w| !w.starts_with("--"))
                        .collect();
                    let name = match words.as_slice() {
                        [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_string()),
                        _ => None,
                    };
                    df.stages.push(Stage {
                        from: words.first().map(|s| s.to_string()).unwrap_or_default(),
                        name,
                        lines: Vec::new(),
                    });
                }
                ("ARG", None) => {
                    let (k, v) = match rest.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.trim_matches('"').to_owned())),
                        None => (rest.clone(), None),
                    };
                    df.args.push((k, v));
                }
                (_, Some(stage)) => stage.lines.push((instr, rest)),
                (other, None) => panic!("{}: {other} before the first FROM", path.display()),
            }
        }
        assert!(!df.stages.is_empty(), "{}: no FROM", path.display());
        df
    }

    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The stage the image is made of (the last one).
    pub fn last(&self) -> &Stage {
        self.stages.last().expect("a stage")
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }
}

impl Stage {
    pub fn all(&self, instr: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(i, _)| i == instr)
            .map(|(_, r)| r.as_str())
            .collect()
    }

    pub fn last_of(&self, instr: &str) -> Option<&str> {
        self.all(instr).last().copied()
    }

    /// Every `ENV` pair, in order (a later one overrides an earlier one).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for rest in self.all("ENV") {
            let words = shell_words::split(rest).unwrap_or_else(|e| panic!("ENV {rest}: {e}"));
            if words.first().is_some_and(|w| w.contains('=')) {
                for w in words {
                    let (k, v) = w
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {rest}: {w} has no ="));
                    out.push((k.to_owned(), v.to_owned()));
                }
            } else if let Some((k, v)) = words.split_first() {
                out.push((k.clone(), v.join(" ")));
            }
        }
        out
    }

    pub fn env_value(&self, key: &str) -> Option<String> {
        self.env()
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// An exec-form (JSON array) `CMD`, `ENTRYPOINT` or `HEALTHCHECK … CMD`.
    pub fn exec_form(&self, instr: &str) -> Option<Vec<String>> {
        let rest = self.last_of(instr)?;
        let json = &rest[rest.find('[')?..];
        serde_json::from_str(json).ok()
    }

    /// The final `USER`.
    pub fn user(&self) -> Option<&str> {
        self.last_of("USER")
    }
}

/// Lines with `\` continuations joined, comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let t = raw.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_owned());
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// Lays out under `root` what the final stage's `COPY` lines put in the image, and
/// returns the folder its last `WORKDIR` names there. Sources come from `context`,
/// or for `COPY --from=<stage> <path>` from `from_stage` (stage, path, local file);
/// copies from the watchdog stage are skipped: the test runs the real binary.
pub fn lay_out(
    df: &Dockerfile,
    context: &Path,
    root: &Path,
    from_stage: &[(&str, &str, &Path)],
) -> PathBuf {
    let in_root = |p: &str| root.join(p.trim_start_matches('/'));
    let mut workdir = String::from("/");
    for (instr, rest) in &df.last().lines {
        match instr.as_str() {
            "WORKDIR" => {
                workdir = if rest.starts_with('/') {
                    rest.clone()
                } else {
                    format!("{workdir}/{rest}")
                };
                std::fs::create_dir_all(in_root(&workdir)).expect("mkdir workdir");
            }
            "COPY" | "ADD" => {
                let words = shell_words::split(rest).expect("COPY words");
                let from = words.iter().find_map(|w| w.strip_prefix("--from="));
                let paths: Vec<&String> = words.iter().filter(|w| !w.starts_with("--")).collect();
                let (dest, srcs) = paths.split_last().expect("COPY dest");
                if from == Some("watchdog") {
                    continue;
                }
                let dest_abs = if dest.starts_with('/') {
                    dest.to_string()
                } else {
                    format!("{workdir}/{dest}")
                };
                let into_dir = dest.ends_with('/')
                    || srcs.len() > 1
                    || dest.as_str() == "."
                    || dest.as_str() == "./";
                for src in srcs {
                    let local: PathBuf = match from {
                        Some(stage) => from_stage
                            .iter()
                            .find(|(s, p, _)| *s == stage && p == src)
                            .map(|(_, _, l)| l.to_path_buf())
                            .unwrap_or_else(|| {
                                panic!("COPY --from={stage} {src}: not provided by the test")
                            }),
                        None => context.join(src),
                    };
                    let target = in_root(&dest_abs);
                    if local.is_dir() {
                        copy_dir(&local, &target);
                    } else {
                        let target = if into_dir || target.is_dir() {
                            target.join(local.file_name().expect("file name"))
                        } else {
                            target
                        };
                        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                        std::fs::copy(&local, &target)
                            .unwrap_or_else(|e| panic!("copy {}: {e}", local.display()));
                    }
                }
            }
            _ => {}
        }
    }
    in_root(&workdir)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run_for(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout"),
        stderr: t_err.join().expect("stderr"),
    }
}

/// The settings an image's environment gives fwatchdog: every `ENV` but the ones that
/// describe the image's own file system.
pub fn watchdog_env(stage: &Stage) -> Vec<(String, String)> {
    stage
        .env()
        .into_iter()
        .filter(|(k, _)| k != "PATH" && k != "HOME")
        .collect()
}

const TEMPLATES: &[&str] = &[
    "dockerfile",
    "bash-streaming",
    "python3",
    "python3-http",
    "node",
    "rust",
    "php",
    "python3-lambda",
    "rust-lambda",
];

fn template_dir(name: &str) -> PathBuf {
    repo().join("templates").join(name)
}

/// Where faas-cli builds a template from: the template folder, except for `dockerfile`,
/// whose function folder is itself the build context.
fn template_context(name: &str) -> PathBuf {
    let dir = template_dir(name);
    if dir.join("Dockerfile").exists() {
        dir
    } else {
        dir.join("function")
    }
}

/// Starts a template's starter handler under fwatchdog, as its image would.
fn start_template(
    name: &str,
    dir: &TempDir,
    from_stage: &[(&str, &str, &Path)],
    extra_env: &[(&str, String)],
) -> (Watchdog, Vec<(String, String)>) {
    let context = template_context(name);
    let df = Dockerfile::read(&context.join("Dockerfile"));
    let cwd = lay_out(&df, &context, &dir.path().join("root"), from_stage);
    let env = watchdog_env(df.last());
    let mut b = watchdog().wrap(&["env", "-C", cwd.to_str().expect("utf8")]);
    for (k, v) in &env {
        b = b.env(k, v);
    }
    // The image's drain (healthcheck_interval) is not what these tests are about: without
    // this each would wait it out when its watchdog is stopped.
    b = b.env("healthcheck_interval", "0");
    for (k, v) in extra_env {
        b = b.env(k, v);
    }
    let w = b.start();
    // The image's HEALTHCHECK command, run against this watchdog's lock file.
    let hc = df
        .last()
        .exec_form("HEALTHCHECK")
        .expect("HEALTHCHECK CMD [..]");
    let mut cmd = Command::new(BIN);
    cmd.args(&hc[1..])
        .env("TMPDIR", w.tmp.path())
        .envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_for(&mut cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{name}: HEALTHCHECK {hc:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (w, env)
}

fn check_round_trip(name: &str, w: &Watchdog, path: &str, body: &[u8], want: &str) {
    let r = request(
        w.port,
        "POST",
        path,
        &[("Content-Type", "text/plain")],
        body,
    );
    assert_eq!(r.status, 200, "{name}: {}\n{}", r.text(), w.log());
    assert_eq!(r.text(), want, "{name}:\n{}", w.log());
    assert!(r.complete, "{name}: response cut short");
}

#[test]
fn template_dockerfile_runs_its_command() {
    let dir = TempDir::new();
    let (w, _) = start_template("dockerfile", &dir, &[], &[]);
    check_round_trip(
        "dockerfile",
        &w,
        "/",
        b"any command\nas a function\n",
        "any command\nas a function\n",
    );
}

#[test]
fn template_bash_streaming_numbers_the_lines() {
    let dir = TempDir::new();
    let (w, env) = start_template("bash-streaming", &dir, &[], &[]);
    assert!(
        env.contains(&("mode".into(), "streaming".into())),
        "{env:?}"
    );
    check_round_trip(
        "bash-streaming",
        &w,
        "/greet",
        b"a\nb",
        "Hello from bash: POST /greet\n1: a\n2: b\nlines: 2\n",
    );
}

#[test]
fn template_python3_classic_echoes_stdin() {
    let dir = TempDir::new();
    let (w, env) = start_template("python3", &dir, &[], &[]);
    assert!(env.contains(&("mode".into(), "classic".into())), "{env:?}");
    check_round_trip(
        "python3",
        &w,
        "/",
        b"hi",
        "Hello from Python! You said: hi\n",
    );
}

#[test]
fn template_python3_http_serves_through_the_proxy() {
    // Its server listens where upstream_url says; a free port keeps parallel tests apart.
    let dir = TempDir::new();
    let url = format!("http://127.0.0.1:{}", util::child_port());
    let (w, env) = start_template("python3-http", &dir, &[], &[("upstream_url", url)]);
    assert!(env.contains(&("mode".into(), "http".into())), "{env:?}");
    check_round_trip(
        "python3-http",
        &w,
        "/hello?x=1",
        b"hi",
        "Hello from Python! You said: hi",
    );
    let r = request(w.port, "POST", "/", &[], b"again");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "Hello from Python! You said: again");
}

#[test]
fn template_node_serves_through_the_proxy() {
    if !util::have("node") {
        return util::skip(
            "template_node_serves_through_the_proxy",
            "node not found (the node template's handler needs it: apt-get install nodejs)",
        );
    }
    let dir = TempDir::new();
    let url = format!("http://127.0.0.1:{}", util::child_port());
    let (w, env) = start_template("node", &dir, &[], &[("upstream_url", url)]);
    assert!(env.contains(&("mode".into(), "http".into())), "{env:?}");
    check_round_trip(
        "node",
        &w,
        "/hello",
        b"hi",
        "Hello from Node.js! You said: hi",
    );
}

#[test]
fn template_rust_compiled_handler_answers() {
    let dir = TempDir::new();
    let handler = build_rust_handler(&dir);
    let (w, env) = start_template("rust", &dir, &[("build", "/handler", &handler)], &[]);
    assert_eq!(
        env.iter()
            .find(|(k, _)| k == "fprocess")
            .map(|(_, v)| v.as_str()),
        Some("./handler")
    );
    check_round_trip("rust", &w, "/", b"hi", "Hello from Rust! You said: hi");
}

/// The Lambda Invoke API of a watchdog.
const INVOKE: &str = "/2015-03-31/functions/function/invocations";

#[test]
fn template_python3_lambda_answers_http_and_invoke() {
    if !crate::lambda::have_awslambdaric() {
        return skip(
            "template_python3_lambda_answers_http_and_invoke",
            "awslambdaric not installed (pip install awslambdaric==4.2.2)",
        );
    }
    let dir = TempDir::new();
    let (w, _) = start_template("python3-lambda", &dir, &[], &[]);
    check_round_trip(
        "python3-lambda",
        &w,
        "/",
        b"hi",
        "Hello from Python on Lambda! You said: hi",
    );
    let r = request(w.port, "POST", INVOKE, &[], br#"{"x":1}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    let v = crate::util::json(&r);
    assert_eq!(v["message"], "Hello from Python on Lambda!");
    assert_eq!(v["event"]["x"], 1);
}

#[test]
fn template_rust_lambda_bootstrap_answers_http_and_invoke() {
    let dir = TempDir::new();
    let Some(bootstrap) = build_rust_lambda(&dir) else {
        return skip(
            "template_rust_lambda_bootstrap_answers_http_and_invoke",
            "the rust-lambda template could not be built (lambda_runtime from crates.io)",
        );
    };
    let (w, _) = start_template(
        "rust-lambda",
        &dir,
        &[("build", "/bootstrap", &bootstrap)],
        &[],
    );
    check_round_trip(
        "rust-lambda",
        &w,
        "/",
        b"hi",
        "Hello from Rust on Lambda! You said: hi",
    );
    let r = request(w.port, "POST", INVOKE, &[], br#"{"x":1}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    let v = crate::util::json(&r);
    assert_eq!(v["message"], "Hello from Rust on Lambda!");
    assert_eq!(v["event"]["x"], 1);
}

/// Builds the rust-lambda template's bootstrap (lambda_runtime comes from crates.io),
/// into the target directory of the lambda tests' function, whose dependencies and
/// profile are the template's: the dependencies built for one serve the other.
fn build_rust_lambda(dir: &TempDir) -> Option<PathBuf> {
    let src = dir.path().join("rust-lambda-src");
    copy_dir(&template_dir("rust-lambda").join("function"), &src);
    let target = repo().join("target").join("lambda-rs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    let out = run_for(&mut cmd, Duration::from_secs(600));
    let built = target.join("release/bootstrap");
    if !out.status.success() || !built.exists() {
        eprintln!(
            "cargo build of the rust-lambda template failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    // Its own copy: another test run may rebuild the shared one meanwhile.
    let mine = dir.path().join("bootstrap");
    std::fs::copy(&built, &mine).expect("copy bootstrap");
    Some(mine)
}

/// Builds the rust template's handler: with cargo, offline (the starter has no
/// dependencies), or if that fails, with plain rustc.
fn build_rust_handler(dir: &TempDir) -> PathBuf {
    let src = dir.path().join("rust-src");
    copy_dir(&template_dir("rust"), &src);
    let target = dir.path().join("rust-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--offline", "--quiet"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    let out = run_for(&mut cmd, Duration::from_secs(45));
    let built = target.join("debug/handler");
    if out.status.success() && built.exists() {
        return built;
    }
    eprintln!(
        "cargo build of the rust template failed, falling back to rustc:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = dir.path().join("libhandler.rlib");
    let bin = dir.path().join("handler-bin");
    for args in [
        vec![
            "--edition",
            "2021",
            "--crate-type",
            "lib",
            "--crate-name",
            "handler",
            "function/src/lib.rs",
            "-o",
            lib.to_str().expect("utf8"),
        ],
        vec![
            "--edition",
            "2021",
            "main/src/main.rs",
            "--extern",
            &format!("handler={}", lib.display()),
            "-o",
            bin.to_str().expect("utf8"),
        ],
    ] {
        let out = run_for(
            Command::new("rustc").args(&args).current_dir(&src),
            Duration::from_secs(45),
        );
        assert!(
            out.status.success(),
            "rustc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// faas-cli's layout and our conventions, for every template folder.
#[test]
fn templates_follow_the_faas_cli_layout() {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("templates"))
        .expect("templates/")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = TEMPLATES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        found, want,
        "templates/ holds exactly the templates this test runs"
    );

    for name in TEMPLATES {
        let dir = template_dir(name);
        let yml = std::fs::read_to_string(dir.join("template.yml")).expect("template.yml");
        let docs = yaml_rust2::YamlLoader::load_from_str(&yml).expect("template.yml parses");
        let language = docs[0]["language"].as_str();
        let fprocess = docs[0]["fprocess"].as_str();
        assert_eq!(language, Some(*name), "{name}: template.yml language");

        let function = dir.join("function");
        assert!(
            std::fs::read_dir(&function)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false),
            "{name}: function/ holds a starter handler"
        );

        let df = Dockerfile::read(&template_context(name).join("Dockerfile"));
        let last = df.last();
        let watchdog_from = df.stage("watchdog").map(|s| s.from.as_str());
        assert_eq!(
            watchdog_from,
            Some("${WATCHDOG_IMAGE}"),
            "{name}: FROM ${{WATCHDOG_IMAGE}} AS watchdog"
        );
        assert!(
            df.arg("WATCHDOG_IMAGE").is_some_and(|v| !v.is_empty()),
            "{name}: ARG WATCHDOG_IMAGE=<default>"
        );
        assert!(
            last.all("COPY")
                .contains(&"--from=watchdog /fwatchdog /usr/bin/fwatchdog"),
            "{name}: COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog"
        );
        let user = last.user().unwrap_or_else(|| panic!("{name}: no USER"));
        let uid = user.split(':').next().unwrap_or("");
        assert!(
            uid.parse::<u32>().is_ok_and(|u| u != 0),
            "{name}: USER {user} must be a non-root numeric id"
        );

        let hc = last
            .exec_form("HEALTHCHECK")
            .unwrap_or_else(|| panic!("{name}: HEALTHCHECK CMD [..]"));
        assert!(
            hc[0] == "fwatchdog" || hc[0] == "/usr/bin/fwatchdog",
            "{name}: {hc:?}"
        );
        assert_eq!(hc[1..], ["--run-healthcheck".to_string()], "{name}: {hc:?}");
        let cmd = last
            .exec_form("CMD")
            .unwrap_or_else(|| panic!("{name}: CMD [..]"));
        assert_eq!(
            cmd,
            ["fwatchdog"],
            "{name}: fwatchdog is the container's first process"
        );

        let env = watchdog_env(last);
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("fprocess").as_deref(),
            fprocess,
            "{name}: template.yml fprocess matches the Dockerfile"
        );
        let mode = get("mode").unwrap_or_else(|| panic!("{name}: ENV mode"));
        assert!(
            [
                "streaming",
                "serializing",
                "classic",
                "http",
                "fastcgi",
                "lambda"
            ]
            .contains(&mode.as_str()),
            "{name}: mode {mode}"
        );
        for k in ["exec_timeout", "read_timeout", "write_timeout"] {
            assert!(get(k).is_some(), "{name}: ENV {k}");
        }
        if mode == "http" {
            assert!(
                get("upstream_url").is_some_and(|u| u.starts_with("http://127.0.0.1:")),
                "{name}: upstream_url"
            );
        }
    }
}
