"""Regenerate the CIFAR-10 experiment YAML files from the official INI configs.

    python mixed-precision-dnns/tools/cfg_to_yaml.py \\
        path/to/train_resnet_quant_fp.cfg path/to/train_resnet_quant_pow2.cfg

writes ``configs/experiments/cifar10_uniform.yaml`` and ``cifar10_pow2.yaml``
(``--out`` once per input to choose other files). For every input file the YAML
holds ``defaults:`` (the fixed CIFAR-10 schedule of the official training
script, then the ``[DEFAULT]`` section) and ``experiments:`` (each named section
with only the keys it sets, in file order; values typed; ``weightfile`` turned
into ``init_from: <EXPERIMENT>``). The ``[DEFAULT]`` section also becomes the
experiment ``DEFAULT`` (the float network the ``*_INIT`` experiments start from).

A name defined by an earlier input too is written once: if its resolved
settings are identical it is left out of the later file (listed under
``source: defined_in_other_file``); if they differ, the later one is renamed
``<NAME>_<SUFFIX>`` (suffix: last ``_`` part of the output file name, e.g.
``POW2``), and its file's ``init_from`` references follow. Both are reported.
Comments and prose of the input files are not carried over.
"""
import tempfile
from pathlib import Path

import yaml

from common.cli import Parser
from common.errors import UserError
from common.cli import run_cli
from common.fileio import atomic_write
from mpdnn import experiments as ex
from mpdnn.official_cfg import BASELINE, CIFAR10_SCHEDULE, read_cfg

DEFAULT_OUTPUTS = ("cifar10_uniform.yaml", "cifar10_pow2.yaml")


def merge(inputs, outputs):
    """Plan every output: list of dicts with defaults, experiments, source, notes."""
    plans, kept = [], {}   # kept: name -> (plan index, resolved settings)
    for path, out in zip(inputs, outputs):
        defaults, sections = read_cfg(path)
        defaults = {**CIFAR10_SCHEDULE, **defaults}
        resolved = {n: {**defaults, **own} for n, own in sections.items()}
        shared = [n for n in sections if n in kept]
        differs = {n for n in shared if resolved[n] != kept[n][1]}
        grew = True
        while grew:   # a same-looking section that starts from a renamed one differs too
            grew = False
            for n in shared:
                if n not in differs and sections[n].get("init_from") in differs:
                    differs.add(n)
                    grew = True
        suffix = Path(out).stem.rsplit("_", 1)[-1].upper()
        rename = {}
        for n in differs:
            new = f"{n}_{suffix}"
            if new in sections or new in kept:
                raise UserError(f"{path}: cannot rename clashing {n} to {new}: name in use")
            rename[n] = new
        experiments, notes, elsewhere = {}, {}, []
        for n, own in sections.items():
            if n in shared and n not in differs:
                if n != BASELINE:
                    elsewhere.append(n)
                continue
            own = dict(own)
            if own.get("init_from") in rename:
                own["init_from"] = rename[own["init_from"]]
            name = rename.get(n, n)
            if n in rename:
                notes[name] = (f"official name {n}; renamed: its settings differ from "
                               f"{n} in {plans[kept[n][0]]['out'].name}")
            elif own.get("init_from") == name:
                notes[name] = "official cfg: init_from names this experiment itself"
            elif n == BASELINE:
                notes[name] = "the [DEFAULT] section run on its own (float network)"
            experiments[name] = own
        for n in sections:
            if n not in kept:
                kept[n] = (len(plans), resolved[n])
        plans.append({
            "out": Path(out), "defaults": defaults, "experiments": experiments, "notes": notes,
            "renamed": rename,
            "source": {"file": Path(path).name, "named_sections": len(sections) - 1,
                       "baseline": BASELINE if BASELINE in experiments else None,
                       "defined_in_other_file": elsewhere},
        })
    return plans


def scalar(value):
    """One YAML scalar that reads back as the same Python value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exp = text.partition("e")
        if exp and "." not in mantissa:   # YAML 1.1 needs the dot: 1.0e-05
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    text = str(value)
    if text and yaml.safe_load(text) == text and text.strip() == text and ":" not in text \
            and "#" not in text:
        return text
    return "'" + text.replace("'", "''") + "'"


def render(plan):
    src, lines = plan["source"], []
    lines += ["# Generated by mixed-precision-dnns/tools/cfg_to_yaml.py from the official",
              f"# {src['file']}; regenerate rather than edit. Keys are the official ones,",
              "# except init_from (replaces weightfile); the schedule keys (model .. momentum)",
              "# are fixed in the official training script. See mpdnn/experiments.py.",
              "source:"]
    lines.append(f"  file: {scalar(src['file'])}")
    lines.append(f"  named_sections: {src['named_sections']}   # in the official file, "
                 f"without [DEFAULT]")
    lines.append(f"  baseline: {scalar(src['baseline'])}"
                 + ("   # [DEFAULT] is identical to an earlier file's" if src["baseline"] is None
                    else ""))
    lines.append("  defined_in_other_file: "
                 + ("[]" if not src["defined_in_other_file"] else "   # identical settings"))
    lines += [f"    - {scalar(n)}" for n in src["defined_in_other_file"]]
    lines.append("defaults:")
    lines += [f"  {k}: {scalar(v)}" for k, v in plan["defaults"].items()]
    lines.append("experiments:")
    for name, own in plan["experiments"].items():
        note = plan["notes"].get(name)
        if note:
            lines.append(f"  # {note}")
        lines.append(f"  {name}:" + ("" if own else " {}"))
        lines += [f"    {k}: {scalar(v)}" for k, v in own.items()]
    return "\n".join(lines) + "\n"


def expected(plan):
    return {"source": plan["source"], "defaults": plan["defaults"],
            "experiments": plan["experiments"]}


def generate(inputs, outputs):
    """Write every output (after checking all of them load); return the plans."""
    if len(inputs) != len(outputs):
        raise UserError(f"{len(inputs)} cfg files but {len(outputs)} outputs")
    if len({Path(o).name for o in outputs}) != len(outputs):
        raise UserError("the output files need distinct names")
    plans = merge(inputs, outputs)
    texts = [render(p) for p in plans]
    with tempfile.TemporaryDirectory() as tmp:
        trial = []
        for plan, text in zip(plans, texts):
            if yaml.safe_load(text) != expected(plan):
                raise AssertionError(f"YAML of {plan['out'].name} does not read back as written")
            trial.append(Path(tmp) / plan["out"].name)
            trial[-1].write_text(text, encoding="utf-8")
        try:   # every experiment valid, every init_from resolvable
            ex.load_experiments(trial)
        except UserError as exc:   # name the cfg file, not the scratch copy
            msg = str(exc)
            for path, scratch in zip(inputs, trial):
                msg = msg.replace(str(scratch), f"{path} (as YAML)")
            raise UserError(msg) from None
    for plan, text in zip(plans, texts):
        plan["out"].parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(plan["out"], "w") as f:
            f.write(text)
    return plans


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("cfg", nargs="+", help="official .cfg files, uniform (fp) first")
    p.add_argument("--out", action="append", default=None, metavar="YAML",
                   help=f"output file, once per cfg (default for two: {', '.join(DEFAULT_OUTPUTS)} "
                        f"in {ex.CONFIG_DIR})")
    args = p.parse_args(argv)
    outs = args.out
    if outs is None:
        if len(args.cfg) != len(DEFAULT_OUTPUTS):
            raise UserError(f"give --out once per cfg file ({len(args.cfg)} cfg files)")
        outs = [ex.CONFIG_DIR / n for n in DEFAULT_OUTPUTS]
    for plan in generate(args.cfg, outs):
        src = plan["source"]
        print(f"{plan['out']}: {len(plan['experiments'])} experiments "
              f"({src['named_sections']} named sections in {src['file']}; "
              f"{len(src['defined_in_other_file'])} identical to an earlier file's)")
        for old, new in plan["renamed"].items():
            print(f"  renamed {old} -> {new}: settings differ from the earlier definition")
    return 0


if __name__ == "__main__":
    run_cli(main)
