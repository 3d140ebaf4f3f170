"""Check a Ray cluster file before `ray up`, offline: `python -m study.cluster check FILE...`.

    python -m study.cluster check cluster.yaml cluster-aws.yaml

Each file passes two sets of checks, and a problem is printed with the file and the line (exit code 2):

1. Ray's own, as `ray up` runs them (`ray.autoscaler._private.util`, a private API: Ray is pinned
   to 2.60.0 in pyproject.toml). The file as written is first validated against Ray's schema
   (`ray/autoscaler/ray-schema.json`, with jsonschema), so that a typo or a missing field is
   reported at its line rather than as a KeyError inside Ray; then `prepare_config` (merges the
   provider's `defaults.yaml`, builds the on-prem node type, merges setup commands) and
   `validate_config` run on it. Neither contacts a host: `prepare_config` reads only files of
   Ray's wheel (for aws too: boto3 is not even imported). What `ray up` does after them, the
   provider's `bootstrap_config` (for aws: boto3 calls that create the key pair, IAM role and
   security group) and filling a node type's `resources` from its instance type, calls the cloud
   and is not run here: give each aws node type its `resources`.
2. cirstudy's conventions (the shipped cluster.yaml and cluster-aws.yaml comment them):
   - shared storage: `metadata: {cirstudy_storage: /shared/studies}` names the study storage
     (Ray leaves `metadata` alone), an absolute path passed to study.run as --storage, and every
     node mounts it (the head, and each worker node type, with Ray's per-type overrides): a
     command in initialization_commands or the node's setup commands runs `mount -t nfs|nfs4|efs`
     (or `mount.nfs4`, `mount.efs`) onto that path or a parent of it, or `mountpoint -q` on one.
     `file_mounts` does not count: it copies, it does not share.
   - ports: Ray has no authentication by default. The head's `--dashboard-host` (the dashboard
     and job API, 8265) must be loopback (Ray's default; reach it with `ray dashboard FILE`), also
     when it comes from Ray's defaults (aws's binds 0.0.0.0); and no rule in
     `provider.security_group.IpPermissions` may open 6379, 8265 or 10001 to 0.0.0.0/0 or ::/0.
     On-prem firewalls and the security groups named by id in a node_config cannot be seen from
     the file: the summary reminds of them.
   - no secrets: AWS access key ids, private key blocks, known token formats, and a literal value
     given to a name containing password, secret, token, api_key or access_key (`$VAR` is fine).
     The line is named, the value never printed.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import io
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import ray
import ray.autoscaler
import yaml
from jsonschema.exceptions import best_match
from ray.autoscaler._private.util import prepare_config, validate_config

__all__ = ["STORAGE_KEY", "ClusterFileError", "ClusterSummary", "check_cluster_file", "main"]

STORAGE_KEY = "cirstudy_storage"  # under `metadata:`
RAY_PORTS = {6379: "the GCS", 8265: "the dashboard and job API", 10001: "the Ray client server"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORLD = {"0.0.0.0/0", "::/0"}
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())

_SECRET_FORMATS = [
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id",
     "`ray up` takes AWS credentials from your machine's AWS configuration and the head from its "
     "IAM instance profile"),
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"), "a private key",
     "point `auth.ssh_private_key` at the key file on your machine"),
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"), "a GitHub token", None),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), "a Hugging Face token", None),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token", None),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), "an API key", None),
]
# a name containing one of these words as a whole part (AWS_SECRET_ACCESS_KEY, api-key, tokens),
# not inside another word (tokenizers)
_SECRET_WORD = r"[\w.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)s?(?:[_.-][\w.-]*)?\b"
# `name: value` (YAML), `NAME=value` (shell), `--name=value` and `--name value` (flags); not `name==1.0`
_SECRET_ASSIGNMENTS = [
    re.compile(rf"(?i)(?P<name>{_SECRET_WORD})[\"']?\s*[:=](?!=)\s*(?P<value>[^\s#]+)"),
    re.compile(rf"(?i)(?P<name>--{_SECRET_WORD})\s+(?P<value>[^\s#-]\S*)"),
]


class ClusterFileError(ValueError):
    """Everything found wrong with one cluster file: one line per problem, each naming the file and
    (where the file has one) the line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ClusterSummary:
    """What a file that passed describes, for the user to read back."""

    path: Path
    provider: str
    nodes: str
    storage: str
    reminders: tuple[str, ...]

    def describe(self) -> str:
        lines = [f"{self.path}: passes Ray {ray.__version__}'s preparation and validation and cirstudy's checks "
                 "(shared storage, ports, no secrets)",
                 f"  provider  {self.provider}",
                 f"  nodes     {self.nodes}",
                 f"  storage   {self.storage}: mounted on every node; pass --storage {self.storage}"]
        lines += [f"  note      {reminder}" for reminder in self.reminders]
        return "\n".join(lines)


class _Lines:
    """The line (1-based) where each key and list item of a YAML document starts, by path."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root.start_mark.line + 1
        self._lines: dict[tuple, int] = {}
        self.repeated: list[tuple[tuple, int]] = []  # (path, line of the second occurrence)
        self._walk(root, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                if child in self._lines:
                    self.repeated.append((child, key.start_mark.line + 1))
                self._lines[child] = key.start_mark.line + 1
                self._walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._lines[path + (index,)] = item.start_mark.line + 1
                self._walk(item, path + (index,))

    def of(self, path: tuple | list) -> int:
        """The line of `path`, or of its nearest ancestor the file has (Ray's defaults add keys
        the file does not have); the first line of the document for the top level."""
        path = tuple(path)
        while path and path not in self._lines:
            path = path[:-1]
        return self._lines.get(path, self.root)


def _dotted(path: tuple | list) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Report:
    def __init__(self, path: Path) -> None:
        self.path, self.problems = path, []
        self.secret_lines: set[int] = set()  # no message may quote these lines' values

    def add(self, line: int | None, text: str) -> None:
        self.problems.append(f"{self.path}, line {line}: {text}" if line else f"{self.path}: {text}")


def _schema_problem(error: jsonschema.ValidationError, lines: _Lines, report: _Report) -> None:
    """One jsonschema error, at the line of the key it is about (a missing key: its parent's)."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        for key in error.instance:
            if key in allowed or any(re.search(pattern, str(key)) for pattern in patterns):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            fix = f"did you mean `{close[0]}`?" if close else f"known keys here: {', '.join(allowed)}"
            report.add(lines.of(path + (key,)), f"`{_dotted(path + (key,))}`: Additional properties are not "
                                                f"allowed ({key!r} was unexpected); {fix}")
        return
    where = f"`{_dotted(path)}`" if path else "the top level"
    line = lines.of(path)
    message = error.message
    if line in report.secret_lines and error.validator != "required":  # jsonschema quotes the value
        message = f"Ray's schema refuses its value ({error.validator}: {json.dumps(error.validator_value)[:80]})"
    report.add(line, f"{where}: {message}")


def _ray_error_place(message: str, config: dict) -> tuple[tuple, str]:
    """Where in the file an error raised by Ray's preparation points (Ray names fields in
    backquotes or as "field NAME"), and the message with what is missing where Ray does not say."""
    provider = config.get("provider") if isinstance(config.get("provider"), dict) else {}
    if message.startswith("Unsupported node provider"):
        return ("provider", "type"), message
    names = [quoted or bare for quoted, bare in re.findall(r"`(\w+)`|field (\w+)", message)]
    if "head_ip" in names and "worker_ips" in names:
        missing = [name for name in ("head_ip", "worker_ips") if name not in provider]
        return ("provider",), f"{message} (`provider` has no {' and no '.join(missing)})" if missing else message
    for name in names:
        for parent, section in (((), config), (("provider",), provider)):
            if name in section:
                return parent + (name,), message
    return (), message


def _said_by_ray(output: str) -> list[str]:
    """Ray's cli_logger warnings (timestamp, level and colours dropped); its PANIC lines repeat the
    exception's message, reported already."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return [f"Ray: {text.strip()}" for level, text in re.findall(r"\t(\w+) \S+ -- (.*)", plain) if level == "WARN"]


def _ray_problems(config: dict, lines: _Lines, report: _Report) -> tuple[dict | None, list[str]]:
    """Ray's schema on the file as written, then Ray's preparation and validation as `ray up` runs
    them. Returns the prepared config (None if Ray refused the file) and Ray's warnings."""
    errors = [best_match([error]) for error in jsonschema.validators.validator_for(SCHEMA)(SCHEMA).iter_errors(config)]
    for error in sorted(errors, key=lambda error: lines.of(error.absolute_path)):
        _schema_problem(error, lines, report)
    if errors:
        return None, []
    output, logged = io.StringIO(), logging.root.manager.disable
    logging.disable(logging.INFO)  # Ray's "setting max workers for ..." chatter
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            prepared = prepare_config(copy.deepcopy(config))
            validate_config(prepared)
    except jsonschema.ValidationError as error:  # the merged defaults broke the schema
        _schema_problem(error, lines, report)
        return None, []
    except Exception as error:  # noqa: BLE001 - Ray's preparation raises ClickException, ValueError, KeyError...
        message = str(getattr(error, "message", None) or error)
        if not isinstance(error, (ValueError, RuntimeError)) and type(error).__name__ != "ClickException":
            message = f"{type(error).__name__}: {message}"
        path, message = _ray_error_place(message, config)
        report.add(lines.of(path), f"Ray: {message}")
        return None, []
    finally:
        logging.disable(logged)
    return prepared, _said_by_ray(output.getvalue())


def _mounts(command: str, storage: str) -> bool:
    """Whether a shell command mounts a network filesystem on `storage` or a parent of it, or fails
    unless one is mounted there (`mountpoint -q DIR`)."""
    for segment in re.split(r"[;&|()]", command):
        words = [word.strip("'\"") for word in segment.split()]
        network = ("mount" in words and re.search(r"-t\s*(?:nfs4?|efs)\b", segment)) \
            or any(word in ("mount.nfs", "mount.nfs4", "mount.efs") for word in words)
        if not (network or "mountpoint" in words):
            continue
        for word in words:
            directory = word.rstrip("/")
            if word.startswith("/") and directory and (storage == directory or storage.startswith(directory + "/")):
                return True
    return False


def _node_commands(prepared: dict) -> dict[str, list[str]]:
    """The commands each kind of node runs before Ray starts, as Ray's updater picks them: the head
    the global initialization and head setup commands, a worker type its own overrides if it has them."""
    initialization = prepared.get("initialization_commands") or []
    nodes = {"the head": initialization + prepared["head_setup_commands"]}
    local = prepared["provider"]["type"] == "local"
    for name, node_type in prepared["available_node_types"].items():
        if node_type.get("max_workers", 0) > 0:
            nodes["the workers" if local else f"the `{name}` workers"] = (
                node_type.get("initialization_commands", initialization)
                + node_type.get("worker_setup_commands", prepared["worker_setup_commands"]))
    return nodes


def _check_storage(raw: dict, prepared: dict, lines: _Lines, report: _Report) -> str | None:
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    storage = metadata.get(STORAGE_KEY)
    example = f"`metadata: {{{STORAGE_KEY}: /shared/studies}}`"
    if storage is None:
        report.add(lines.of(("metadata",)), f"no shared storage declared: add {example}, an absolute path that every "
                                            "node mounts from one shared filesystem (pass it to study.run as "
                                            "--storage), and mount it in initialization_commands (see cluster.yaml)")
        return None
    if not isinstance(storage, str) or not storage.startswith("/"):
        report.add(lines.of(("metadata", STORAGE_KEY)),
                   f"`metadata.{STORAGE_KEY}` must be an absolute path, got {storage!r}; e.g. {example}")
        return None
    unmounted = [node for node, commands in _node_commands(prepared).items()
                 if not any(_mounts(command, storage) for command in commands)]
    if unmounted:
        report.add(lines.of(("metadata", STORAGE_KEY)),
                   f"the storage {storage} is not mounted on {' and '.join(unmounted)}: no command in their "
                   f"initialization or setup commands mounts it or a parent (`mount -t nfs4 SERVER:/EXPORT "
                   f"/shared`) or checks it (`mountpoint -q /shared`); `file_mounts` copies, it does not share")
        return None
    return storage


def _check_ports(raw: dict, prepared: dict, lines: _Lines, report: _Report, file: Path) -> None:
    provider = prepared["provider"]["type"]
    for index, command in enumerate(prepared.get("head_start_ray_commands") or []):
        for host in re.findall(r"--dashboard-host(?:=|\s+)(\S+)", command):
            host = host.strip("'\";")
            if host in LOOPBACK:
                continue
            opens = f"`--dashboard-host={host}` opens the dashboard and job API (8265), which have no authentication"
            fix = f"use --dashboard-host=127.0.0.1 (Ray's own default) and `ray dashboard {file}`, which forwards it over SSH"
            if "head_start_ray_commands" in raw:
                report.add(lines.of(("head_start_ray_commands", index)),
                           f"{opens}, to every network the head is on; {fix}")
            else:
                report.add(None, f"the file sets no head_start_ray_commands, and Ray's {provider} defaults pass {opens}, "
                                 f"to every network the head is on; set head_start_ray_commands as cluster-aws.yaml "
                                 f"does and {fix}")
    group = raw.get("provider", {}).get("security_group")
    permissions = group.get("IpPermissions") if isinstance(group, dict) else None
    for index, permission in enumerate(permissions if isinstance(permissions, list) else []):
        if not isinstance(permission, dict):
            continue
        ranges = [r.get("CidrIp") for r in permission.get("IpRanges") or [] if isinstance(r, dict)]
        ranges += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges") or [] if isinstance(r, dict)]
        world = [cidr for cidr in ranges if cidr in WORLD]
        if not world:
            continue
        low, high = permission.get("FromPort", -1), permission.get("ToPort", permission.get("FromPort", -1))
        if str(permission.get("IpProtocol")) in ("-1", "all") or low == -1:
            opened = list(RAY_PORTS)
        else:
            opened = [port for port in RAY_PORTS if isinstance(low, int) and isinstance(high, int) and low <= port <= high]
        if opened:
            ports = ", ".join(f"{port} ({RAY_PORTS[port]})" for port in opened)
            report.add(lines.of(("provider", "security_group", "IpPermissions", index)),
                       f"`provider.security_group.IpPermissions[{index}]` opens {ports} to {world[0]}, and Ray has "
                       f"no authentication: allow only your own network (a CidrIp such as 10.0.0.0/16), or drop the "
                       f"rule and use `ray dashboard {file}`")


def _check_secrets(text: str, report: _Report) -> None:
    """Secrets pasted into the file, by line; the value itself is never printed."""
    fix_default = "read it on the node from the environment (`$NAME`) or from a file that is not in this cluster file"
    for number, line in enumerate(text.splitlines(), start=1):
        found = next(((what, fix) for pattern, what, fix in _SECRET_FORMATS if pattern.search(line)), None)
        if found is None:
            for pattern in _SECRET_ASSIGNMENTS:
                match = pattern.search(line)
                value = match and match.group("value").strip("'\"")
                if match and value and not value.startswith("$") and value not in ("null", "~"):
                    found = (f"`{match.group('name')}` is given a value written in the file", None)
                    break
        if found is not None:
            what, fix = found
            report.add(number, f"{what} (not shown); remove it: {fix or fix_default}")
            report.secret_lines.add(number)


def _describe_nodes(prepared: dict) -> tuple[str, str]:
    provider = prepared["provider"]
    if provider["type"] == "local":
        workers = provider.get("worker_ips") or []
        plural = "" if len(workers) == 1 else "s"
        return "local (on-prem)", (f"head {provider.get('head_ip')}, {len(workers)} worker{plural} "
                                   f"({', '.join(map(str, workers))})")
    parts = []
    for name, node_type in prepared["available_node_types"].items():
        shape = ", ".join(f"{key} {value}" for key, value in node_type.get("resources", {}).items())
        instance = node_type.get("node_config", {}).get("InstanceType")
        what = ", ".join(part for part in (instance, shape) if part)
        if name == prepared["head_node_type"]:
            parts.insert(0, f"head `{name}` ({what})")
        else:
            parts.append(f"`{name}` x {node_type.get('min_workers', 0)}-{node_type.get('max_workers', 0)} ({what})")
    region = f" {provider['region']}" if provider.get("region") else ""
    return f"{provider['type']}{region}", "; ".join(parts)


def check_cluster_file(path: Path) -> ClusterSummary:
    """Run Ray's preparation and validation and cirstudy's checks on one cluster file, contacting no
    host. Raises ClusterFileError listing every problem found."""
    path = Path(path)
    report = _Report(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ClusterFileError([f"{path}: cannot read it ({error.strerror or error})"]) from None
    _check_secrets(text, report)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        report.add(mark.line + 1 if mark else None, f"not valid YAML: {error.problem or error.context}")
        raise ClusterFileError(report.problems) from None
    if root is None or not isinstance(config, dict):
        report.add(None, "a cluster file is a YAML mapping (cluster_name:, provider:, ...); see cluster.yaml")
        raise ClusterFileError(report.problems)
    lines = _Lines(root)
    for key_path, line in lines.repeated:
        report.add(line, f"`{_dotted(key_path)}` appears twice; YAML keeps only the last one")
    prepared, ray_warnings = _ray_problems(config, lines, report)
    if prepared is None:
        raise ClusterFileError(report.problems)
    storage = _check_storage(config, prepared, lines, report)
    _check_ports(config, prepared, lines, report, path)
    if report.problems:
        raise ClusterFileError(report.problems)
    provider, nodes = _describe_nodes(prepared)
    reminders = list(ray_warnings)
    if prepared["provider"]["type"] == "local":
        reminders.append("keep the nodes on a private network or firewalled: Ray's GCS (6379) and client server "
                         "(10001) listen on every interface, unauthenticated")
    else:
        reminders.append("security groups named by id in a node_config are not seen here: they must not open "
                         "6379, 8265 or 10001 to the internet either")
    return ClusterSummary(path=path, provider=provider, nodes=nodes, storage=storage, reminders=tuple(reminders))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.cluster", description="Ray cluster files for cirstudy.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate cluster files offline: Ray's preparation and validation, "
                                              "then cirstudy's checks (shared storage, ports, secrets); no host is "
                                              "contacted")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            summary = check_cluster_file(path)
        except ClusterFileError as error:  # bad input: what and where, exit code 2 as argparse's
            for problem in error.problems:
                print(f"error: {problem}", file=sys.stderr)
            status = 2
            continue
        print(summary.describe())
    return status


if __name__ == "__main__":
    sys.exit(main())
