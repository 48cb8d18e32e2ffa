"""Print an evaluation report (the dict bot/evaluation.py builds) as tables, and write it as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

LABELS = {
    "mimic": "mimic (guard off)",
    "mimic_guarded": "mimic (guard on: posted)",
    "mimic_alone": "mimic model alone (posted)",
    "markov": "markov (raw)",
    "markov_tested": "markov (markovify test)",
    "real": "real held-out (ceiling)",
}


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _pct(x: Any) -> str:
    return _num(x, "{:.1%}")


def _clip(text: str, width: int = 150) -> str:
    text = text.replace("\n", " / ")
    return text if len(text) <= width else text[:width - 1] + "…"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _gain_line(g: dict[str, Any]) -> str:
    what = "name and speaker slot" if g.get("conditioned") else "name"
    return (f"speaker check: held-out texts cost {_num(g['right_name'], '{:.4f}')} bits/char written as the right "
            f"speaker ({what}), {_num(g['wrong_name'], '{:.4f}')} as another speaker "
            f"(gain {_num(g['gain'], '{:+.4f}')}, {g['records']} messages)")


def _voice_line(v: dict[str, Any]) -> str:
    return (f"voice check: held-out texts cost {_num(v['network'], '{:.3f}')} bits/char by the network alone, "
            f"{_num(v['own'], '{:.3f}')} adapted by the writer's own voice memory, {_num(v['other'], '{:.3f}')} "
            f"by another speaker's (beta {v.get('beta', '?')}, {v['records']} messages)")


def _served_line(s: dict[str, Any] | None) -> str:
    if not s or not s["voice_memory"]:
        return ", model alone"
    if s["drafts"] == 1:
        return ", voice memory, 1 draft"
    keep = "the style ranker's choice" if s["style_ranker"] else "the one the memory explains best"
    return f", voice memory, {s['drafts']} drafts: {keep}"


def _length_table(systems: dict[str, Any]) -> list[str]:
    """Fidelity by message length: longer messages are easier to attribute, so compare within a band."""
    bands = next(iter(systems.values()))["fidelity_by_length"]
    names = [f"{b['min']}+ chars" if b["max"] is None else f"{b['min']}-{b['max'] - 1} chars" for b in bands]
    out = ["fidelity by message length (all speakers together; messages in the band)",
           f"{'':28}" + "".join(f"{n:>16}" for n in names)]
    for name in ("mimic", "mimic_guarded", "mimic_alone", "markov", "markov_tested", "real"):
        if name in systems:
            cells = [f"{_num(b['fidelity'])} ({b['messages']})" for b in systems[name]["fidelity_by_length"]]
            out.append(f"{LABELS[name]:28}" + "".join(f"{c:>16}" for c in cells))
    return out


def format_chat_report(r: dict[str, Any]) -> str:
    info, held, cls, systems = r["model_info"], r["held_out"], r["classifier"], r["systems"]
    cfg = r["config"]
    out = [f"model {r['model']} ({info.get('arch', '?')}, hidden {info.get('hidden', '?')}, "
           f"{info.get('layers', '?')} layer(s)); store {r['db']}",
           f"held-out: {held['messages']:,} messages, {held['bytes']:,} bytes: "
           f"{held['bits_per_char']:.3f} bits/char",
           _gain_line(r["speaker_name_gain"]),
           *(f"note: {n}" for n in r.get("built_for_eval", [])),
           *([_voice_line(r["voice_check"])] if r.get("voice_check") else []),
           f"{len(cls['speakers'])} speakers with {cfg['min_messages']}+ held-out and training messages, "
           f"{cfg['samples']} messages generated as each (temperature {cfg['temperature']}, srand {cfg['srand']}"
           f"{', context ' + str(cfg['context']) + ' lines' if cfg['context'] else ''}"
           f"{_served_line(r.get('served_with'))}); classifier: {cls['kind']}",
           ""]
    head = (f"{'':28}{'fidelity':>9}{'on new (n)':>14}{'at real lengths':>16}{'median chars':>13}{'copies>=40':>11}"
            f"{'longest span':>13}{'whole copies':>13}  messages")
    out.append(head)
    for name in ("mimic", "mimic_guarded", "mimic_alone", "markov", "markov_tested", "real"):
        if name not in systems:
            continue
        s = systems[name]
        extra = ""
        if name in ("mimic_guarded", "mimic_alone"):
            extra = f" ({s['refused']} refused)"
        made = f"{s['messages']:,}" if name == "real" else f"{s['messages']}/{s['asked']}"
        on_new = f"{_num(s['fidelity_novel'])} ({s['new_messages']})"
        out.append(f"{LABELS[name]:28}{_num(s['fidelity']):>9}{on_new:>14}"
                   f"{_num(s.get('fidelity_at_real_lengths')):>16}{_num(s.get('median_chars'), '{:.0f}'):>13}"
                   f"{_pct(s['copy_rate']):>11}{_num(s['mean_longest_span'], '{:.1f}'):>13}"
                   f"{_pct(s['exact_copy_rate']):>13}  {made}{extra}")
    out.append(f"{'chance':28}{_num(cls['chance']):>9}")
    out.append("")
    out.extend(_length_table(systems))
    out.append("")
    out.append(f"{'speaker':22}{'train':>7}{'held-out':>9}{'bits/char':>10}{'ceiling':>8}{'mimic':>7}"
               f"{'+guard':>8}{'alone':>7}{'markov':>8}{'+test':>7}")
    for name, sp in r["speakers"].items():
        f = sp["fidelity"]
        out.append(f"{name[:21]:22}{sp['train_messages']:>7}{sp['held_out_messages']:>9}"
                   f"{_num(sp['bits_per_char'], '{:.3f}'):>10}{_num(sp['ceiling']):>8}{_num(f['mimic']):>7}"
                   f"{_num(f['mimic_guarded']):>8}{_num(f.get('mimic_alone')):>7}{_num(f['markov']):>8}"
                   f"{_num(f['markov_tested']):>7}")
    out.append("")
    ceiling = cls["ceiling"]
    for key, (ours, theirs) in (("raw", ("mimic", "markov")), ("posted", ("mimic_guarded", "markov_tested"))):
        t, a, b = r["target"][key], systems[ours], systems[theirs]
        out.append(f"target, {LABELS[ours]} vs {LABELS[theirs]}: "
                   f"fidelity above markov {_yes(t['fidelity_above_markov'])} ({_num(a['fidelity'])} vs "
                   f"{_num(b['fidelity'])}), half the ceiling {_yes(t['at_least_half_ceiling'])} "
                   f"({_num(a['fidelity'])} vs {_num(0.5 * ceiling)}), lower copy rate "
                   f"{_yes(t['lower_copy_rate'])} ({_pct(a['copy_rate'])} vs {_pct(b['copy_rate'])}): "
                   f"{'met' if t['met'] else 'NOT met'}")
    if cfg["show"]:
        out.append("")
        out.append("samples (mimic as posted / markov raw)")
        for name, sp in r["speakers"].items():
            out.append(f"{name}:")
            for text in sp["samples"]["mimic"]:
                out.append(f"  mimic  | {_clip(text)}")
            for text in sp["samples"]["markov"]:
                out.append(f"  markov | {_clip(text)}")
    return "\n".join(out)


def format_text_report(r: dict[str, Any]) -> str:
    return f"{r['bits_per_char']:.4f} bits/char on {r['text']} ({r['bytes']:,} bytes)"


def _plain(value: Any) -> Any:
    """JSON has no NaN: write None for figures that could not be computed."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
