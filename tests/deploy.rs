//! The files in deploy/ keep up with the indexer: every metric the alert rules and the statsd
//! mapping name is one that docs/metrics.md's Metrics table documents (tests/docs.rs ties that
//! table to the code), and the Kubernetes probes use the status endpoint's paths.

use std::collections::{BTreeMap, BTreeSet};

const METRICS_PAGE: &str = include_str!("../docs/metrics.md");
const ALERTS: &str = include_str!("../deploy/prometheus/alerts.yml");
const MAPPING: &str = include_str!("../deploy/statsd-exporter/mapping.yml");
const DEPLOYMENT: &str = include_str!("../deploy/k8s/deployment.yaml");

/// The rows of docs/metrics.md's Metrics table as (statsd name without prefix, type cell).
fn documented_metrics() -> Vec<(String, String)> {
    let section = METRICS_PAGE
        .split("\n## Metrics\n")
        .nth(1)
        .expect("docs/metrics.md has a `## Metrics` section");
    let table = section.split("\n## ").next().unwrap_or(section);
    let mut metrics = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split('`').skip(1).step_by(2) {
            metrics.push((name.to_owned(), kind.to_owned()));
        }
    }
    assert!(
        metrics.len() > 10,
        "found only {} metrics in docs/metrics.md's Metrics table",
        metrics.len()
    );
    metrics
}

/// The name deploy/statsd-exporter/mapping.yml gives a documented metric: dots become
/// underscores under the `dual_indexer_` prefix, and counters gain `_total`.
fn mapped_name(name: &str, kind: &str) -> String {
    let base = format!("dual_indexer_{}", name.replace('.', "_"));
    if kind.contains("counter") {
        format!("{base}_total")
    } else {
        base
    }
}

/// Every series name Prometheus can see for the documented metrics: a histogram (a statsd timer)
/// also has `_bucket`, `_sum` and `_count` series.
fn known_series() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for (name, kind) in documented_metrics() {
        let mapped = mapped_name(&name, &kind);
        if kind.contains("timer") || kind.contains("histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{mapped}{suffix}"));
            }
        }
        known.insert(mapped);
    }
    known
}

/// Every `dual_indexer_…` name in a text.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    text.match_indices("dual_indexer_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The mapping's rules as statsd name (without prefix) → Prometheus name.
fn mapping_rules() -> BTreeMap<String, String> {
    let mut rules = BTreeMap::new();
    let mut matched: Option<&str> = None;
    for line in MAPPING.lines().map(str::trim) {
        if let Some(pattern) = line.strip_prefix("- match:") {
            matched = Some(pattern.trim());
        } else if let Some(name) = line.strip_prefix("name:") {
            let pattern = matched
                .take()
                .unwrap_or_else(|| panic!("mapping.yml has `{line}` without a `match:` before it"));
            let statsd = pattern.strip_prefix("dual_indexer.").unwrap_or_else(|| {
                panic!("mapping.yml matches `{pattern}`, which lacks the `dual_indexer.` prefix")
            });
            rules.insert(statsd.to_owned(), name.trim().to_owned());
        }
    }
    rules
}

#[test]
fn every_metric_in_the_alert_rules_is_documented() {
    let known = known_series();
    let referenced = referenced_metrics(ALERTS);
    assert!(
        referenced.len() > 5,
        "the scan found the metrics of deploy/prometheus/alerts.yml ({referenced:?})"
    );
    let unknown: Vec<&String> = referenced.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "deploy/prometheus/alerts.yml uses metrics that docs/metrics.md's Metrics table does not \
         list (with the mapping's names: counters end in `_total`, histograms add `_bucket`, \
         `_sum`, `_count`): {unknown:?}"
    );
}

#[test]
fn the_mapping_names_every_documented_metric_and_nothing_else() {
    let rules = mapping_rules();
    let mut problems = Vec::new();
    for (name, kind) in documented_metrics() {
        let expected = mapped_name(&name, &kind);
        match rules.get(&name) {
            Some(mapped) if *mapped == expected => {}
            Some(mapped) => problems.push(format!(
                "`{name}` is mapped to {mapped}, expected {expected}"
            )),
            None => problems.push(format!("`{name}` has no mapping")),
        }
    }
    let documented: BTreeSet<String> = documented_metrics().into_iter().map(|(n, _)| n).collect();
    for name in rules.keys().filter(|n| !documented.contains(*n)) {
        problems.push(format!(
            "`{name}` is mapped but not in docs/metrics.md's Metrics table"
        ));
    }
    assert!(
        problems.is_empty(),
        "deploy/statsd-exporter/mapping.yml and docs/metrics.md's Metrics table disagree: \
         {problems:#?}"
    );
    let unknown: Vec<String> = referenced_metrics(MAPPING)
        .difference(&known_series())
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "deploy/statsd-exporter/mapping.yml names unknown metrics: {unknown:?}"
    );
}

/// The httpGet path of a probe of deploy/k8s/deployment.yaml.
fn probe_path(probe: &str) -> String {
    let heading = format!("{probe}:");
    let mut lines = DEPLOYMENT.lines().skip_while(|l| l.trim() != heading);
    assert!(
        lines.next().is_some(),
        "deploy/k8s/deployment.yaml has no {probe}"
    );
    lines
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(|path| path.trim().to_owned())
        .unwrap_or_else(|| panic!("the {probe} of deploy/k8s/deployment.yaml has no httpGet path"))
}

#[test]
fn the_kubernetes_probes_use_the_status_endpoints() {
    assert_eq!(probe_path("livenessProbe"), "/healthz", "livenessProbe");
    assert_eq!(probe_path("startupProbe"), "/healthz", "startupProbe");
    assert_eq!(probe_path("readinessProbe"), "/readyz", "readinessProbe");
}

const COMPOSE: &str = include_str!("../docker-compose.yml");
const CONFIGMAP: &str = include_str!("../deploy/k8s/configmap.yaml");

fn yaml(name: &str, text: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
}

/// Parses a command the deployment runs, as the binary would.
fn parses(what: &str, args: &[serde_json::Value]) {
    let argv: Vec<std::ffi::OsString> = std::iter::once("dual-indexer".into())
        .chain(args.iter().map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("{what}: argument {a} is not a string"))
                .into()
        }))
        .collect();
    if let Err(e) = dual_indexer::config::parse::<dual_indexer::commands::Cli>(argv) {
        panic!("{what} runs a command the CLI refuses: {e}");
    }
}

#[test]
fn the_compose_file_runs_the_whole_migration_with_health_checks_and_conditions() {
    let compose = yaml("docker-compose.yml", COMPOSE);
    let services = compose["services"]
        .as_object()
        .expect("docker-compose.yml has services");
    for name in [
        "kafka",
        "es-legacy",
        "es-new",
        "seeder",
        "legacy-indexer",
        "new-indexer",
        "statsd-exporter",
        "prometheus",
    ] {
        assert!(services.contains_key(name), "service {name} is missing");
    }
    let image = |name: &str| services[name]["image"].as_str().unwrap_or_default();
    assert!(
        image("kafka").starts_with("apache/kafka:"),
        "{}",
        image("kafka")
    );
    assert!(image("es-legacy").contains("elasticsearch:7.17."));
    assert!(image("es-new").contains("elasticsearch:8."));
    let mut host_ports = BTreeSet::new();
    for (name, service) in services {
        assert!(
            service.get("image").is_some() != service.get("build").is_some(),
            "{name} needs exactly one of image and build"
        );
        for dependency in service["depends_on"].as_object().into_iter().flatten() {
            let (target, how) = dependency;
            assert!(
                services.contains_key(target),
                "{name} depends on unknown {target}"
            );
            let condition = how["condition"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} → {target}: depends_on needs a condition"));
            match condition {
                "service_healthy" => assert!(
                    services[target].get("healthcheck").is_some(),
                    "{name} waits for {target} to be healthy, but it has no healthcheck"
                ),
                "service_completed_successfully" => assert_eq!(
                    services[target]["restart"], "no",
                    "{target} must run once for {name} to wait for its completion"
                ),
                "service_started" => {}
                other => panic!("{name} → {target}: unknown condition {other}"),
            }
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().expect("ports are strings");
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
            let (host, protocol) = match port.rsplit_once('/') {
                Some((p, proto)) => (p, proto),
                None => (port, "tcp"),
            };
            let host_port = host.split(':').nth(1).unwrap().to_owned();
            assert!(
                host_ports.insert((host_port.clone(), protocol.to_owned())),
                "host port {host_port}/{protocol} is published twice"
            );
        }
        if service.get("build").is_some() {
            let command = service["command"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} is built here and needs a command"));
            parses(&format!("compose service {name}"), command);
        }
    }
    for name in [
        "kafka",
        "es-legacy",
        "es-new",
        "legacy-indexer",
        "new-indexer",
    ] {
        assert!(
            services[name]["healthcheck"]["test"].is_array(),
            "{name} has no healthcheck test"
        );
    }
    let group = |name: &str| {
        let command = services[name]["command"].as_array().unwrap();
        let at = command.iter().position(|a| a == "--group").unwrap();
        command[at + 1].clone()
    };
    assert_ne!(
        group("legacy-indexer"),
        group("new-indexer"),
        "the indexers share a group"
    );
    assert!(services["prometheus"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v
            .as_str()
            .unwrap_or_default()
            .starts_with("./deploy/prometheus:")));
}

#[test]
fn the_kubernetes_manifests_are_complete_and_use_only_known_settings() {
    let deployment = yaml("deploy/k8s/deployment.yaml", DEPLOYMENT);
    assert_eq!(deployment["kind"], "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    let container = |name: &str| {
        containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    container("legacy-indexer");
    let indexer = container("dual-indexer");
    for name in ["dual-indexer", "statsd-exporter"] {
        let requests = &container(name)["resources"]["requests"];
        assert!(
            requests["cpu"].is_string() && requests["memory"].is_string(),
            "{name} needs cpu and memory requests"
        );
        assert!(container(name)["image"].is_string(), "{name} has no image");
    }
    parses(
        "the dual-indexer container",
        indexer["args"].as_array().expect("args"),
    );
    let known = dual_indexer::config::variables(
        &<dual_indexer::commands::Cli as clap::CommandFactory>::command(),
    );
    let configmap = yaml("deploy/k8s/configmap.yaml", CONFIGMAP);
    assert_eq!(configmap["kind"], "ConfigMap");
    assert_eq!(
        indexer["envFrom"][0]["configMapRef"]["name"], configmap["metadata"]["name"],
        "the container reads the ConfigMap"
    );
    let mut names: Vec<String> = configmap["data"]
        .as_object()
        .expect("data")
        .keys()
        .cloned()
        .collect();
    names.extend(
        indexer["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["name"].as_str().unwrap().to_owned()),
    );
    for name in &names {
        assert!(
            known.contains(name),
            "{name} is not a variable dual-indexer reads"
        );
    }
    // The password comes from a mounted Secret, through a _FILE variable that points into it.
    let secret_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"].is_string())
        .expect("a Secret volume");
    let mount = indexer["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == secret_volume["name"])
        .expect("the Secret is mounted into the dual-indexer container");
    let dir = mount["mountPath"].as_str().unwrap();
    let password_file = indexer["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DUAL_INDEXER_ES_PASSWORD_FILE")
        .expect("DUAL_INDEXER_ES_PASSWORD_FILE is set");
    assert!(password_file["value"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{dir}/")));
    assert!(
        !names.iter().any(|n| n == "DUAL_INDEXER_ES_PASSWORD"),
        "a password must not be a plain variable"
    );
}

#[test]
fn a_manifest_check_fails_on_an_unknown_variable() {
    // The check above is only as good as `variables()`: it must know the real names and refuse others.
    let known = dual_indexer::config::variables(
        &<dual_indexer::commands::Cli as clap::CommandFactory>::command(),
    );
    for real in [
        "DUAL_INDEXER_BROKERS",
        "DUAL_INDEXER_ES_PASSWORD_FILE",
        "DUAL_INDEXER_LEGACY_ES_API_KEY",
        "DUAL_INDEXER_KAFKA_SASL_PASSWORD_FILE",
    ] {
        assert!(known.contains(real), "{real}");
    }
    assert!(!known.contains("DUAL_INDEXER_ES_URLS"));
}
