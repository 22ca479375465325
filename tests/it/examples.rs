//! `examples/api-key-protected/`: every YAML file parses, every Kubernetes manifest passes
//! strict schema validation, and the values that must agree across faas-cli, Kubernetes,
//! Knative and Swarm do (secret name, mount path, port 8080, probe paths, a grace period
//! that fits the drain, image); and the function itself,
//! under the real fwatchdog with a temp secrets folder, answers 200 to the right key
//! and 401 to anything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::templates::{repo, watchdog_env, Dockerfile};
use crate::util::{random_bytes, request, watchdog, TempDir};

const SECRET: &str = "secret-api-key";
const IMAGE: &str = "fwatchdog-examples/api-key-protected:latest";
const KNATIVE: &str = "serving.knative.dev/v1";

fn example() -> PathBuf {
    repo().join("examples/api-key-protected")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Every YAML document under examples/, with the file it came from.
fn documents() -> Vec<(PathBuf, Yaml)> {
    let mut files = Vec::new();
    yaml_files(&repo().join("examples"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read yaml");
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!parsed.is_empty(), "{}: empty", f.display());
        docs.extend(parsed.into_iter().map(|d| (f.clone(), d)));
    }
    docs
}

/// Seconds in a duration as fwatchdog reads it: a bare integer is seconds, else a
/// number with one unit (all that the examples use).
fn seconds(v: &str) -> f64 {
    let v = v.trim();
    if let Ok(n) = v.parse::<f64>() {
        return n;
    }
    for (unit, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] {
        if let Some(n) = v.strip_suffix(unit).and_then(|n| n.parse::<f64>().ok()) {
            return n * scale;
        }
    }
    panic!("not a duration: {v:?}")
}

fn as_string(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        _ => None,
    }
}

/// The drain fwatchdog needs on SIGTERM: healthcheck_interval (default write_timeout)
/// plus write_timeout (default 30 s), from the orchestrator's env over the image's.
fn drain_seconds(env: &[(String, String)]) -> f64 {
    let image = Dockerfile::read(&example().join("protectedapi/Dockerfile"));
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .or_else(|| image.last().env_value(k))
    };
    let write = get("write_timeout").map(|v| seconds(&v)).unwrap_or(30.0);
    let interval = get("healthcheck_interval")
        .map(|v| seconds(&v))
        .unwrap_or(write);
    interval + write
}

#[test]
fn example_yaml_files_agree_on_secret_port_probes_and_grace() {
    let docs = documents();
    // Core Kubernetes kinds (the Knative Service has its own test).
    let kinds = |k: &str| {
        docs.iter()
            .filter(|(_, d)| d["kind"].as_str() == Some(k))
            .filter(|(_, d)| d["apiVersion"].as_str() != Some(KNATIVE))
            .collect::<Vec<_>>()
    };

    // faas-cli: stack.yaml
    let (file, stack) = docs
        .iter()
        .find(|(_, d)| !d["functions"].is_badvalue())
        .expect("a faas-cli stack file");
    assert_eq!(
        stack["provider"]["name"].as_str(),
        Some("openfaas"),
        "{}",
        file.display()
    );
    assert!(
        stack["provider"]["gateway"]
            .as_str()
            .is_some_and(|g| g.starts_with("http")),
        "{}: provider.gateway",
        file.display()
    );
    let f = &stack["functions"]["protectedapi"];
    assert_eq!(f["lang"].as_str(), Some("dockerfile"));
    assert_eq!(f["image"].as_str(), Some(IMAGE));
    let handler = f["handler"].as_str().expect("handler");
    assert!(
        file.parent()
            .expect("dir")
            .join(handler)
            .join("Dockerfile")
            .exists(),
        "handler {handler} has a Dockerfile"
    );
    let secrets: Vec<&str> = f["secrets"]
        .as_vec()
        .expect("secrets")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(secrets, [SECRET]);

    // Kubernetes: Secret, Deployment, Service.
    let found = kinds("Secret");
    let [(_, secret)] = found.as_slice() else {
        panic!("one Secret")
    };
    assert_eq!(secret["metadata"]["name"].as_str(), Some(SECRET));
    assert!(
        !secret["stringData"][SECRET].is_badvalue() || !secret["data"][SECRET].is_badvalue(),
        "the Secret has a key named {SECRET}, so the mounted file is named {SECRET}"
    );
    let ns = secret["metadata"]["namespace"].as_str();

    let found = kinds("Deployment");
    let [(_, deploy)] = found.as_slice() else {
        panic!("one Deployment")
    };
    assert_eq!(
        deploy["metadata"]["namespace"].as_str(),
        ns,
        "Deployment and Secret share a namespace"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let [c] = &pod["containers"].as_vec().expect("containers")[..] else {
        panic!("one container")
    };
    assert_eq!(c["image"].as_str(), Some(IMAGE));
    let ports: Vec<i64> = c["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert!(ports.contains(&8080), "containerPort 8080: {ports:?}");
    for (probe, path) in [
        ("livenessProbe", "/_/health"),
        ("readinessProbe", "/_/ready"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            as_string(&c[probe]["httpGet"]["port"]).as_deref(),
            Some("8080"),
            "{probe} port"
        );
    }
    let mount = c["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/var/openfaas/secrets"))
        .expect("a volume mounted at /var/openfaas/secrets");
    assert_eq!(
        mount["readOnly"].as_bool(),
        Some(true),
        "secrets are mounted read-only"
    );
    let volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume is declared");
    assert_eq!(volume["secret"]["secretName"].as_str(), Some(SECRET));
    if let Some(items) = volume["secret"]["items"].as_vec() {
        assert!(
            items
                .iter()
                .any(|i| i["key"].as_str() == Some(SECRET) && i["path"].as_str() == Some(SECRET)),
            "{items:?}"
        );
    }
    let env: Vec<(String, String)> = c["env"]
        .as_vec()
        .map(|v| {
            v.iter()
                .map(|e| {
                    (
                        e["name"].as_str().expect("name").to_owned(),
                        as_string(&e["value"]).expect("value"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds") as f64;
    let drain = drain_seconds(&env);
    assert!(grace > drain, "terminationGracePeriodSeconds {grace} must exceed the drain (healthcheck_interval + write_timeout = {drain})");
    if pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true) {
        let image = Dockerfile::read(&example().join("protectedapi/Dockerfile"));
        let user = image.last().user().expect("USER");
        assert!(
            user.split(':')
                .next()
                .is_some_and(|u| u.parse::<u32>().is_ok_and(|u| u != 0)),
            "runAsNonRoot needs a numeric non-root USER, not {user}"
        );
    }

    let found = kinds("Service");
    let [(_, svc)] = found.as_slice() else {
        panic!("one Service")
    };
    assert_eq!(svc["metadata"]["namespace"].as_str(), ns);
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_hash().expect("selector") {
        assert_eq!(
            &labels[k.as_str().expect("key")],
            v,
            "the Service selects the Deployment's pods"
        );
    }
    let targets: Vec<String> = svc["spec"]["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .filter_map(|p| as_string(&p["targetPort"]))
        .collect();
    assert_eq!(targets, ["8080"]);

    // Docker Swarm stack.
    let (file, swarm) = docs
        .iter()
        .find(|(_, d)| !d["services"].is_badvalue())
        .expect("a Swarm stack file");
    assert_eq!(
        swarm["secrets"][SECRET]["external"].as_bool(),
        Some(true),
        "{}: the secret is external",
        file.display()
    );
    let s = &swarm["services"]["protectedapi"];
    assert_eq!(s["image"].as_str(), Some(IMAGE));
    let [sec] = &s["secrets"].as_vec().expect("service secrets")[..] else {
        panic!("one secret")
    };
    // Short form, or long form with the default target: /run/secrets/secret-api-key.
    let (source, target) = match sec {
        Yaml::String(n) => (n.as_str(), n.as_str()),
        long => (
            long["source"].as_str().expect("source"),
            long["target"]
                .as_str()
                .unwrap_or(long["source"].as_str().expect("source")),
        ),
    };
    assert_eq!(
        (source, target),
        (SECRET, SECRET),
        "mounted at /run/secrets/{SECRET}"
    );
    let command: Vec<&str> = s["command"]
        .as_vec()
        .expect("command")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        command
            .windows(2)
            .any(|w| w == ["--api-key-secret", SECRET]),
        "{command:?}"
    );
    let ports: Vec<String> = s["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .filter_map(|p| {
            as_string(&p["target"]).or_else(|| {
                p.as_str()
                    .and_then(|p| p.rsplit(':').next())
                    .map(str::to_owned)
            })
        })
        .collect();
    assert_eq!(ports, ["8080"]);
    let test: Vec<&str> = s["healthcheck"]["test"]
        .as_vec()
        .expect("healthcheck.test")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        test.ends_with(&["fwatchdog", "--run-healthcheck"]),
        "{test:?}"
    );
    let env: Vec<(String, String)> = s["environment"]
        .as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().expect("key").to_owned(),
                        as_string(v).expect("value"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let grace = seconds(s["stop_grace_period"].as_str().expect("stop_grace_period"));
    let drain = drain_seconds(&env);
    assert!(
        grace > drain,
        "stop_grace_period {grace}s must exceed the drain ({drain}s)"
    );

    // The image: the key check is fwatchdog's, asked for in CMD.
    let image = Dockerfile::read(&example().join("protectedapi/Dockerfile"));
    let cmd = image.last().exec_form("CMD").expect("CMD [..]");
    assert_eq!(cmd, ["fwatchdog", "--api-key-secret", SECRET]);
}

#[test]
fn knative_service_runs_the_same_function_with_a_grace_that_fits_the_drain() {
    let docs = documents();
    let found: Vec<_> = docs
        .iter()
        .filter(|(_, d)| d["apiVersion"].as_str() == Some(KNATIVE))
        .collect();
    let [(file, ksvc)] = found.as_slice() else {
        panic!("one Knative Service")
    };
    let at = file.display();
    assert_eq!(ksvc["kind"].as_str(), Some("Service"), "{at}");
    let secret_ns = docs
        .iter()
        .find(|(_, d)| d["kind"].as_str() == Some("Secret"))
        .map(|(_, d)| d["metadata"]["namespace"].clone())
        .expect("a Secret");
    assert_eq!(ksvc["metadata"]["namespace"], secret_ns, "{at}: namespace");
    let spec = &ksvc["spec"]["template"]["spec"];
    assert!(
        spec["terminationGracePeriodSeconds"].is_badvalue(),
        "{at}: Knative refuses terminationGracePeriodSeconds; timeoutSeconds is the grace"
    );
    let [c] = &spec["containers"].as_vec().expect("containers")[..] else {
        panic!("{at}: one container")
    };
    assert_eq!(c["image"].as_str(), Some(IMAGE), "{at}");
    // Knative allows one port and tells the container about it with PORT.
    let [port] = &c["ports"].as_vec().expect("ports")[..] else {
        panic!("{at}: one port")
    };
    assert_eq!(port["containerPort"].as_i64(), Some(8080), "{at}");
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"].as_str(), Some("/_/health"), "{at}");
    assert!(
        probe["port"].is_badvalue() || probe["port"].as_i64() == Some(8080),
        "{at}: a Knative probe's port is the container port or absent"
    );
    let mount = c["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/var/openfaas/secrets"))
        .expect("secrets mounted at /var/openfaas/secrets");
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "{at}");
    let volume = spec["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume is declared");
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some(SECRET),
        "{at}"
    );
    let env: Vec<(String, String)> = c["env"]
        .as_vec()
        .map(|v| {
            v.iter()
                .map(|e| {
                    let name = e["name"].as_str().expect("name").to_owned();
                    (name, as_string(&e["value"]).expect("value"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !env.iter().any(|(k, _)| k == "port"),
        "{at}: the OpenFaaS port would override Knative's PORT"
    );
    let grace = spec["timeoutSeconds"].as_i64().expect("timeoutSeconds") as f64;
    let drain = drain_seconds(&env);
    assert!(
        grace > drain,
        "{at}: timeoutSeconds {grace} (the pod's grace period) must exceed the drain ({drain}s)"
    );
}

/// Validates each manifest given as an argument against the Kubernetes schemas of
/// `kubernetes-validate`, in strict mode (an unknown field is an error). A Knative
/// Service's revision template is a Kubernetes PodSpec plus Knative's own fields, so it
/// is checked as a Pod without those.
const VALIDATE: &str = r#"
import sys, yaml, kubernetes_validate
KNATIVE_ONLY = ("timeoutSeconds", "containerConcurrency", "responseStartTimeoutSeconds", "idleTimeoutSeconds")
failed = 0
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        name = "%s %s/%s" % (path, doc.get("kind"), doc.get("metadata", {}).get("name"))
        if doc.get("apiVersion") == "serving.knative.dev/v1":
            spec = {k: v for k, v in doc["spec"]["template"]["spec"].items() if k not in KNATIVE_ONLY}
            doc = {"apiVersion": "v1", "kind": "Pod", "metadata": doc["metadata"], "spec": spec}
        try:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
            print("valid", name)
        except Exception as e:
            failed += 1
            print("INVALID", name, ":", e)
sys.exit(1 if failed else 0)
"#;

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let test = "examples::kubernetes_manifests_pass_strict_schema_validation";
    let has_validator = std::process::Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_validator {
        crate::util::skip(
            test,
            "needs python3 with kubernetes-validate (pip install kubernetes-validate)",
        );
        return;
    }
    let docs: Vec<PathBuf> = documents()
        .into_iter()
        .filter(|(_, d)| !d["apiVersion"].is_badvalue() && !d["kind"].is_badvalue())
        .map(|(f, _)| f)
        .collect();
    let mut manifests = docs.clone();
    manifests.dedup();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .args(&manifests)
        .output()
        .expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Deployment, Service, Secret and the Knative Service, each really checked.
    let valid = text.lines().filter(|l| l.starts_with("valid ")).count();
    assert!(docs.len() >= 4, "{docs:?}");
    assert_eq!(valid, docs.len(), "every manifest checked: {text}");
}

#[test]
fn example_function_unlocks_with_the_key_and_denies_without() {
    let image = Dockerfile::read(&example().join("protectedapi/Dockerfile"));
    let cmd = image.last().exec_form("CMD").expect("CMD [..]");
    let key: String = random_bytes(12)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secrets = TempDir::new();
    // As `echo KEY | docker secret create` writes it: with a trailing newline.
    std::fs::write(secrets.path().join(SECRET), format!("{key}\n")).expect("write secret");

    let mut b = watchdog();
    for (k, v) in watchdog_env(image.last()) {
        b = b.env(&k, v);
    }
    for a in &cmd[1..] {
        b = b.arg(a);
    }
    // Not the drain under test: stop at once when the test ends.
    let w = b
        .env("healthcheck_interval", "0")
        .arg("--secrets-dir")
        .arg(secrets.path().to_str().expect("utf8"))
        .start();

    let r = request(w.port, "POST", "/", &[("X-Api-Key", &key)], b"\n");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Unlocked the function!\n"),
        "{}",
        w.log()
    );
    for presented in [None, Some("thisiswrong"), Some("")] {
        let headers: Vec<(&str, &str)> = presented.map(|k| ("X-Api-Key", k)).into_iter().collect();
        let r = request(w.port, "POST", "/", &headers, b"\n");
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, "Access denied!\n"),
            "key {presented:?}"
        );
    }
    // Probes need no key.
    assert_eq!(w.get("/_/health").status, 200);
    assert!(!w.log().contains(&key), "the key never reaches the log");
}

#[test]
fn example_function_refuses_to_start_without_its_secret() {
    let image = Dockerfile::read(&example().join("protectedapi/Dockerfile"));
    let cmd = image.last().exec_form("CMD").expect("CMD [..]");
    let empty = TempDir::new();
    let mut b = watchdog();
    for (k, v) in watchdog_env(image.last()) {
        b = b.env(&k, v);
    }
    for a in &cmd[1..] {
        b = b.arg(a);
    }
    let (status, out) = b
        .arg("--secrets-dir")
        .arg(empty.path().to_str().expect("utf8"))
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains(SECRET), "{out}");
}

/// Cargo treats examples/*.rs as Rust examples (autoexamples is off, but keep it so).
#[test]
fn examples_folder_has_no_rust_files_at_top_level() {
    for e in std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .flatten()
    {
        assert!(
            e.path().extension().is_none_or(|x| x != "rs"),
            "{}",
            e.path().display()
        );
    }
}
