"""Compare the kernels of two PTX files, entry by entry, up to register numbers, labels and the hashes in
internal names: whether a source change that should not change the code (a refactor made where no GPU can
run it) compiles to the same instructions. --ignore-smem-offsets also equates [reg+N] addresses (a change
that only moves data within shared memory).

  git show REV:kernels/src/X.cu > a/X.cu; cp kernels/src/X.cu b/X.cu   (same file name: it enters the hashes)
  (cd a && nvcc -std=c++17 -arch=sm_90 -O3 -I$REPO/kernels/include -ptx X.cu)   and the same in b
  python3 bench/gpu/ptx_compare.py a/X.ptx b/X.ptx [--ignore-smem-offsets]

Prints one line per kernel of the first file: "same" or how many lines differ. Session 18 used it for
guided_sample.cu's shared sort (bench/NOTES.md)."""
import argparse
import difflib
import re


def entries(path: str, ignore_offsets: bool) -> dict[str, list[str]]:
    text = re.sub(r"_INTERNAL_[0-9a-f]+_", "INT_", re.sub(r"_GLOBAL__N__[0-9a-f]+_", "NS_", open(path).read()))
    out = {}
    for part in re.split(r"(?=\.visible \.entry|\.entry )", text)[1:]:
        name = re.search(r"\.entry\s+(\S+)\(", part).group(1)
        body = re.sub(r"\$L__BB[0-9_]+", "L", re.sub(r"%[a-z]+[0-9]+", "R", part))
        if ignore_offsets:
            body = re.sub(r"\[R(\+\d+)?\]", "[R+X]", body)
        out[name] = [ln for ln in body.splitlines()
                     if not ln.strip().startswith("//") and ".loc" not in ln and not ln.strip().startswith(".reg")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore-smem-offsets", action="store_true")
    args = ap.parse_args()
    a, b = entries(args.a, args.ignore_smem_offsets), entries(args.b, args.ignore_smem_offsets)
    for name in sorted(a):
        if name not in b:
            print(f"{name}: only in {args.a}")
            continue
        diff = [ln for ln in difflib.unified_diff(a[name], b[name], lineterm="", n=0)
                if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        print(f"{name}: {'same' if not diff else f'{len(diff)} lines differ'}")


if __name__ == "__main__":
    main()
