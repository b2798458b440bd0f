"""`perfmodel hardware|models|scenarios list|show`: browse the built-in catalogs (or any YAML file)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    for kind, helptext in (
        ("hardware", "list or show hardware specs (GPU datasheets with sources)"),
        ("models", "list or show model architectures and their derived sizes"),
        ("scenarios", "list or show decoding scenarios and every scenario field"),
    ):
        p = sub.add_parser(kind, help=helptext, description=helptext)
        actions = p.add_subparsers(title="actions", metavar="ACTION")
        lp = actions.add_parser("list", help=f"one line per {kind} catalog entry")
        lp.add_argument("--json", action="store_true", help="print machine-readable JSON")
        lp.set_defaults(func=_list, kind=kind)
        sp = actions.add_parser("show", help=f"every field of one {kind} entry")
        sp.add_argument("name", metavar="NAME", help="catalog name or path to a YAML file")
        sp.add_argument("--json", action="store_true", help="print machine-readable JSON")
        sp.set_defaults(func=_show, kind=kind)
        if kind == "models":
            ip = actions.add_parser(
                "import", help="convert a Hugging Face config.json into a model YAML with its sources",
                description="Read a Hugging Face config.json as published (Llama, Mistral, Qwen2, Qwen3, LLaDA, "
                            "Dream) and write the model YAML perfmodel reads: the fields that change cost, the "
                            "ones the architecture implies, and a source citing the config. Fields that do not "
                            "change cost are ignored with a note. Any command's --model also takes the "
                            "config.json itself.")
            ip.add_argument("config", metavar="CONFIG.json", help="a Hugging Face config.json")
            ip.add_argument("-o", "--output", metavar="FILE.yaml",
                            help="model YAML to write (default: print it)")
            ip.set_defaults(func=_import_config)
        p.set_defaults(func=lambda args, p=p: (p.print_help(), 2)[1])


def _import_config(args: argparse.Namespace) -> int:
    """Write (or print) the model YAML of a config.json, after checking that it loads as a model spec."""
    import sys

    import yaml

    from perfmodel.specs.hf_config import load_config
    from perfmodel.specs.model import load_model

    import warnings

    from perfmodel.specs.hf_config import ConfigNote

    data = load_config(args.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNote)  # noted once, above
        model = load_model(args.config)  # the same checks any command applies to it
    data["sources"]["imported"] = f"perfmodel models import {args.config}"
    head = ("name", "hf_id", "description", "sources")
    data = {**{k: data[k] for k in head if k in data}, **{k: v for k, v in data.items() if k not in head}}
    text = (f"# {model.name}: imported from {args.config} by perfmodel models import; "
            f"{model.parameters / 1e9:.2f}B parameters derived\n") + yaml.safe_dump(data, sort_keys=False)
    if not args.output:
        sys.stdout.write(text)
        return 0
    from perfmodel.files import write_atomic

    write_atomic(args.output, text)
    print(f"wrote {args.output} ({model.name}); use it with --model {args.output}", file=sys.stderr)
    return 0


def _loader(kind: str):
    if kind == "hardware":
        from perfmodel.specs.hardware import hardware_names, load_hardware
        return hardware_names, load_hardware
    if kind == "models":
        from perfmodel.specs.model import load_model, model_names
        return model_names, load_model
    from perfmodel.specs.scenario import load_scenario, scenario_names
    return scenario_names, load_scenario


def _list(args: argparse.Namespace) -> int:
    from perfmodel.cli.output import print_json, table

    names, load = _loader(args.kind)
    rows = [load(n).summary() for n in names()]
    if args.json:
        print_json(rows)
        return 0
    if rows:
        headers = list(rows[0])
        print(table([[r.get(h) for h in headers] for r in rows], headers))
    return 0


def _show(args: argparse.Namespace) -> int:
    from perfmodel.cli.output import print_json, table

    _, load = _loader(args.kind)
    spec = load(args.name)
    data = spec.to_dict()
    if args.kind == "models":
        data["derived"] = spec.derived()
    findings = []
    if args.kind == "hardware":
        from perfmodel.specs.sanity import hardware_findings

        findings = [str(f) for f in hardware_findings(spec)]
        data["findings"] = findings
    if args.json:
        print_json(data)
        return 0
    print(table(_flatten({k: v for k, v in data.items() if k != "findings"}), ["field", "value"]))
    if findings:
        print("\nfindings (perfmodel/specs/sanity.py):")
        for line in findings:
            print(f"  {line}")
    if args.kind == "scenarios":
        from perfmodel.specs.scenario import field_help

        print("\nfields (default, description):")
        for name, default, desc in field_help():
            print(f"  {name:28s} {default:12s} {desc}")
    return 0


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows
