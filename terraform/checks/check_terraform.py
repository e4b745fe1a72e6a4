#!/usr/bin/env python3
"""Static checks for terraform/: every .tf parses, and the lab's invariants hold.

Run with a Python that has python-hcl2 (see terraform/checks/README.md):

    python terraform/checks/check_terraform.py [--terraform]

Without Azure or provider downloads this is what can be known about the configuration:
- every *.tf file parses (python-hcl2);
- the job settings file declares exactly the variables that carry the job's settings, and the job
  resource takes each setting from its variable (so the file really is the single source);
- the scale rule is KEDA azure-servicebus with queueName/namespace/messageCount/activationMessageCount,
  the two counts from their variables, both auth modes wired;
- the job waits for the image build and its role assignments; the image build re-runs on source change;
- global names carry the random suffix; the outputs the runner reads exist; providers are pinned.
With --terraform (needs a `terraform` binary, no providers): `terraform fmt -check`, and the variable
validations are evaluated against the settings file and against known-bad values.

Exit status 0 when everything holds; otherwise each problem is printed with the file it concerns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hcl2

TF_DIR = Path(__file__).resolve().parent.parent
SETTINGS = TF_DIR / "job.auto.tfvars.json"

# Job attribute path -> the variable it must come from.
JOB_SETTINGS = {
    ("replica_timeout_in_seconds",): "replica_timeout_in_seconds",
    ("replica_retry_limit",): "replica_retry_limit",
    ("event_trigger_config", "parallelism"): "parallelism",
    ("event_trigger_config", "replica_completion_count"): "replica_completion_count",
    ("event_trigger_config", "scale", "min_executions"): "min_executions",
    ("event_trigger_config", "scale", "max_executions"): "max_executions",
    ("event_trigger_config", "scale", "polling_interval_in_seconds"): "polling_interval_in_seconds",
    ("event_trigger_config", "scale", "rules", "name"): "scale_rule_name",
    ("event_trigger_config", "scale", "rules", "custom_rule_type"): "scale_rule_type",
    ("template", "container", "cpu"): "cpu",
    ("template", "container", "memory"): "memory",
    ("name",): "job_name",
}

# What xtask/src/lab/azure reads from `terraform output -json`.
RUNNER_OUTPUTS = {
    "resource_group_name", "job_name", "container_name", "servicebus_namespace",
    "servicebus_fqdn", "queue_name", "log_analytics_workspace_id",
}

# (settings key, bad value, words the error must contain): the validations must reject these.
BAD_VALUES = [
    ("memory", "1Gi", "twice the cpu"),
    ("max_executions", 0, "max_executions"),
    ("message_count", 0, "message_count"),
    ("activation_message_count", -1, "activation_message_count"),
    ("activation_message_count", 0.5, "activation_message_count"),
    ("job_name", "Job_Rust", "job_name"),
    ("scale_rule_type", "azure-queue", "azure-servicebus"),
    ("cpu", 0.3, "multiple of 0.25"),
]


def unquote(value):
    """python-hcl2 keeps HCL quotes on block labels and string literals; drop them and its markers."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


def parse_all(problems: list[str]) -> dict[str, dict]:
    parsed = {}
    files = sorted(TF_DIR.glob("*.tf"))
    if not files:
        problems.append(f"{TF_DIR}: no .tf files found")
    for path in files:
        try:
            with path.open() as handle:
                parsed[path.name] = unquote(hcl2.load(handle))
        except Exception as error:  # the parser raises several types; all mean "does not parse"
            problems.append(f"{path.name}: does not parse: {error}")
    return parsed


def blocks(parsed: dict[str, dict], kind: str) -> dict[str, tuple[str, dict]]:
    """Top-level blocks of one kind by label, e.g. blocks(parsed, 'variable')['cpu']."""
    found = {}
    for file, doc in parsed.items():
        for entry in doc.get(kind, []):
            for label, body in entry.items():
                found[label] = (file, body)
    return found


def resources(parsed: dict[str, dict]) -> dict[str, tuple[str, dict]]:
    found = {}
    for file, doc in parsed.items():
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    found[f"{rtype}.{name}"] = (file, body)
    return found


def dig(body, path):
    for key in path:
        if isinstance(body, list):
            if len(body) != 1:
                return None
            body = body[0]
        if not isinstance(body, dict) or key not in body:
            return None
        body = body[key]
    return body


def check_settings(parsed, problems):
    variables = blocks(parsed, "variable")
    try:
        settings = json.loads(SETTINGS.read_text())
    except (OSError, ValueError) as error:
        problems.append(f"{SETTINGS.name}: cannot be read as JSON: {error}")
        return
    for key in settings:
        if key not in variables:
            problems.append(f"{SETTINGS.name}: key {key!r} has no `variable \"{key}\"` in variables.tf")
    for var in set(JOB_SETTINGS.values()) | {"queue_name", "message_count", "activation_message_count", "env_names"}:
        file, body = variables.get(var, (None, None))
        if body is None:
            problems.append(f"variables.tf: job setting {var!r} is not declared")
            continue
        if var not in settings:
            problems.append(f"{SETTINGS.name}: job setting {var!r} has no value (it must live in this file)")
        if "default" in body:
            problems.append(f"{file}: variable {var!r} has a default; the settings file must be its only source")
        if not body.get("validation"):
            problems.append(f"{file}: variable {var!r} has no validation block")
    for name, (file, body) in variables.items():
        if not body.get("description") and name not in settings:
            problems.append(f"{file}: variable {name!r} has no description")


def check_job(parsed, problems):
    res = resources(parsed)
    file, job = res.get("azurerm_container_app_job.job", (None, None))
    if job is None:
        problems.append("no `resource \"azurerm_container_app_job\" \"job\"` found")
        return
    for path, var in JOB_SETTINGS.items():
        value = dig(job, path)
        if value != f"${{var.{var}}}":
            problems.append(f"{file}: job {'.'.join(path)} is {value!r}, expected it from var.{var}")
    metadata = dig(job, ("event_trigger_config", "scale", "rules", "metadata")) or {}
    if set(metadata) != {"queueName", "namespace", "messageCount", "activationMessageCount"}:
        problems.append(f"{file}: scale rule metadata keys are {sorted(metadata)}, expected queueName, namespace, messageCount, activationMessageCount")
    for key, var in (("messageCount", "message_count"), ("activationMessageCount", "activation_message_count")):
        if f"var.{var}" not in str(metadata.get(key)):
            problems.append(f"{file}: scale rule {key} must come from var.{var}")
    rule = dig(job, ("event_trigger_config", "scale", "rules")) or [{}]
    rule = rule[0] if isinstance(rule, list) else rule
    if "scaler" not in str(rule.get("identity_id")):
        problems.append(f"{file}: the scale rule's identity_id must name the scaler identity (managed-identity mode)")
    if "authentication" not in str(rule.get("dynamic")):
        problems.append(f"{file}: the scale rule needs a dynamic authentication block (connection-string mode)")
    env_names = [e.get("name") for e in dig(job, ("template", "container", "env")) or []]
    for key in ("servicebus_fqdn", "managed_identity_client_id", "queue_name"):
        if f"${{var.env_names.{key}}}" not in env_names:
            problems.append(f"{file}: container env {key} must be named by var.env_names.{key}")
    depends = " ".join(job.get("depends_on", []))
    for needed in ("terraform_data.image", "terraform_data.image_docker", "azurerm_role_assignment.job_acr_pull", "azurerm_role_assignment.job_receiver"):
        if needed not in depends:
            problems.append(f"{file}: the job must depend on {needed} (the first execution needs it)")

    file, image = res.get("terraform_data.image", (None, None))
    if image is None:
        problems.append("no `resource \"terraform_data\" \"image\"` (the az acr build step) found")
    else:
        triggers = str(image.get("triggers_replace"))
        if "source_hash" not in triggers:
            problems.append(f"{file}: terraform_data.image must be re-triggered by local.source_hash")
        if "timestamp()" in triggers:
            problems.append(f"{file}: terraform_data.image must not use timestamp() (rebuilds on every apply)")
        exec_ = dig(image, ("provisioner", "local-exec")) or {}
        if exec_.get("interpreter", [])[:3] != ["az", "acr", "build"]:
            problems.append(f"{file}: the image is built with `az acr build` as the local-exec interpreter (no shell)")
    file, docker = res.get("terraform_data.image_docker", (None, None))
    if docker is None:
        problems.append("no `resource \"terraform_data\" \"image_docker\"` (the fallback without ACR Tasks) found")
    else:
        steps = [p.get("local-exec", {}).get("interpreter", [])[:2] for p in docker.get("provisioner", [])]
        if steps != [["az", "acr"], ["docker", "build"], ["docker", "push"]]:
            problems.append(f"{file}: terraform_data.image_docker must run az acr login, docker build, docker push in order; found {steps}")
        if "source_hash" not in str(docker.get("triggers_replace")):
            problems.append(f"{file}: terraform_data.image_docker must be re-triggered by local.source_hash")

    for name in ("azurerm_container_registry.lab", "azurerm_servicebus_namespace.lab"):
        file, body = res.get(name, (None, {}))
        if "local.names" not in str(body.get("name")):
            problems.append(f"{file or '?'}: {name} has a fixed name; use local.names (random suffix)")


def check_outputs_and_pins(parsed, problems):
    outputs = blocks(parsed, "output")
    for missing in sorted(RUNNER_OUTPUTS - set(outputs)):
        problems.append(f"outputs.tf: output {missing!r} is missing; the runner reads it")
    pins = {}
    for doc in parsed.values():
        for terraform in doc.get("terraform", []):
            for providers in terraform.get("required_providers", []):
                pins.update(providers)
    azurerm = pins.get("azurerm", {}).get("version", "")
    if not azurerm.startswith("~> 5"):
        problems.append(f"versions.tf: pin azurerm to the current major (~> 5.x), found {azurerm!r}")


def run_terraform(args, cwd):
    return subprocess.run(["terraform", *args], cwd=cwd, capture_output=True, text=True,
                          env={"TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": "/dev/null",
                               "PATH": __import__("os").environ.get("PATH", "")})


def check_with_terraform(problems):
    if shutil.which("terraform") is None:
        problems.append("--terraform given but no `terraform` on PATH")
        return
    fmt = run_terraform(["fmt", "-check", "-diff", "-recursive"], TF_DIR)
    if fmt.returncode != 0:
        problems.append(f"terraform fmt -check: run `terraform fmt terraform/`\n{fmt.stdout}")
    # A module with only the variables needs no provider, so `plan` evaluates every validation offline.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(TF_DIR / "variables.tf", tmp)
        shutil.copy(SETTINGS, tmp)
        init = run_terraform(["init", "-input=false", "-no-color"], tmp)
        if init.returncode != 0:
            problems.append(f"terraform init (variables only) failed:\n{init.stderr}")
            return
        plan = run_terraform(["plan", "-input=false", "-no-color"], tmp)
        if plan.returncode != 0:
            problems.append(f"{SETTINGS.name} breaks a variable validation:\n{plan.stderr}")
        for key, bad, words in BAD_VALUES:
            settings = json.loads(SETTINGS.read_text())
            settings[key] = bad
            (Path(tmp) / SETTINGS.name).write_text(json.dumps(settings))
            plan = run_terraform(["plan", "-input=false", "-no-color"], tmp)
            if plan.returncode == 0 or words not in " ".join(plan.stderr.split()):
                problems.append(f"variables.tf: {key}={bad!r} should be rejected with a message about {words!r}; got:\n{plan.stderr}")


def main() -> int:
    problems: list[str] = []
    parsed = parse_all(problems)
    if parsed:
        check_settings(parsed, problems)
        check_job(parsed, problems)
        check_outputs_and_pins(parsed, problems)
    if "--terraform" in sys.argv[1:]:
        check_with_terraform(problems)
    for problem in problems:
        print(f"✘ {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {TF_DIR}", file=sys.stderr)
        return 1
    print(f"✔ {len(parsed)} .tf files parse; settings, job wiring, outputs and pins hold"
          + (" (terraform fmt and validations too)" if "--terraform" in sys.argv[1:] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
