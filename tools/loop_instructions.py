"""Instructions per element of the CPU row loops, read from a built spyre_ops/_C*.so.

Usage::

    python tools/loop_instructions.py                 # the module in this checkout
    python tools/loop_instructions.py path/to/_C.so --show

For every instance of the row-loop templates of csrc/cpu/rms_norm_rows.h
(``sum_squares``, ``scale_row``, ``scale_row_and_sum_next``, ``add_row``),
disassembles it (``objdump``), finds its innermost loops (the instructions
between a backward branch and its target) and prints, per loop, the instructions
per iteration, the elements per iteration (the smallest step, in bytes, of a
pointer or index the loop's memory operands use, over sizeof(T)) and their
ratio. ``--show`` prints the loops themselves. Needs binutils (objdump, nm).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys

FUNCTIONS = re.compile(r"spyre_ops::cpu::(sum_squares|scale_row|scale_row_and_sum_next|add_sum_squares|add_row)<")
SIZEOF = {"float": 4, "double": 8, "c10::BFloat16": 2, "c10::Half": 2}
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
BRANCH = re.compile(r"^j\w+$")
STEP = re.compile(r"^(add|sub)\s+\$(-?0x[0-9a-f]+),%(\w+)$")
LEA_STEP = re.compile(r"^lea\s+(-?0x[0-9a-f]+)\(%(\w+)\),%(\w+)$")
MEM = re.compile(r"(-?0x[0-9a-f]+)?\(%(\w+)(?:,%(\w+),(\d))?\)")


def functions(so: str) -> list[tuple[int, int, str]]:
    """(address, size, demangled name) of the row-loop template instances."""
    out = subprocess.run(["nm", "-C", "-S", "--defined-only", so], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and FUNCTIONS.search(parts[3]) and "[clone" not in parts[3]:
            found.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return sorted(set(found))


def disassemble(so: str, start: int, size: int) -> list[tuple[int, str, str]]:
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", f"--start-address={start:#x}", f"--stop-address={start + size:#x}", so],
        check=True, capture_output=True, text=True).stdout
    insns = []
    for line in out.splitlines():
        m = INSN.match(line)
        if m:
            insns.append((int(m.group(1), 16), m.group(2), m.group(3).split("<")[0].strip()))
    return insns


def innermost_loops(insns: list[tuple[int, str, str]]) -> list[list[tuple[int, str, str]]]:
    """Bodies [target, backward branch] that contain no other backward branch."""
    spans = []
    for i, (addr, op, args) in enumerate(insns):
        if BRANCH.match(op) and re.fullmatch(r"[0-9a-f]+", args):
            target = int(args, 16)
            if target <= addr:
                start = next((k for k, ins in enumerate(insns) if ins[0] == target), None)
                if start is not None:
                    spans.append((start, i))
    inner = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    return [insns[a:b + 1] for a, b in inner]


def step_bytes(loop: list[tuple[int, str, str]]) -> int | None:
    """The smallest number of bytes a memory operand of the loop advances per iteration."""
    steps: dict[str, int] = {}
    for _, op, args in loop:
        text = f"{op} {args}"
        m = STEP.match(text)
        if m:
            value = int(m.group(2), 16)
            value = value - (1 << 64) if value >= 1 << 63 else value
            steps[m.group(3)] = abs(value)
        m = LEA_STEP.match(text)
        if m and m.group(2) == m.group(3):
            steps[m.group(2)] = abs(int(m.group(1), 16))
    advances = []
    for _, op, args in loop:
        for _, base, index, scale in MEM.findall(args):
            if index in steps:
                advances.append(steps[index] * int(scale))
            elif base in steps and base != "rip":
                advances.append(steps[base])
    return min(advances) if advances else None


def element_size(name: str) -> int:
    """sizeof(T): T is the first type among the template arguments."""
    args = name.split("<", 1)[1].split(">", 1)[0]
    return next((SIZEOF[a.strip()] for a in args.split(",") if a.strip() in SIZEOF), 4)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("so", nargs="?", help="the built module (default: spyre_ops/_C*.so of this checkout)")
    p.add_argument("--all", action="store_true", help="every innermost loop, not only each function's main loop")
    p.add_argument("--show", action="store_true", help="print the loops' instructions too")
    args = p.parse_args()
    so = args.so or next(iter(glob.glob(os.path.join(here, "spyre_ops", "_C*.so"))), None)
    if so is None:
        print("no spyre_ops/_C*.so here: build first (setup.py build_ext --inplace)", file=sys.stderr)
        return 1
    for addr, size, name in functions(so):
        short = re.sub(r"\(.*$", "", name.split(" ", 1)[1] if name.startswith(("float ", "double ", "void ")) else name)
        loops = []
        for loop in innermost_loops(disassemble(so, addr, size)):
            step = step_bytes(loop)
            loops.append((step // element_size(name) if step else 0, len(loop), loop))
        if not args.all:  # the main loop: the most elements per iteration, then the most work (the weighted one)
            loops = sorted(loops, key=lambda e: e[:2])[-1:]
        for elements, _, loop in loops:
            per = f"{len(loop) / elements:.3f}/element" if elements else "?"
            print(f"{short}: {len(loop)} instructions, {elements or '?'} elements per iteration: {per}")
            if args.show:
                for a, op, rest in loop:
                    print(f"    {a:x}: {op} {rest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
