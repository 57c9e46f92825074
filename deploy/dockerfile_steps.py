#!/usr/bin/env python3
"""The Dockerfile's steps, for deploy/check-image-steps.sh to run outside Docker.

    dockerfile_steps.py context DOCKERFILE SRC DEST   copy the build context: SRC's files that
                                                      .dockerignore lets through, into DEST
    dockerfile_steps.py steps DOCKERFILE ROOT         print the steps as shell assignments,
                                                      the absolute paths of the build stage
                                                      moved under ROOT/build, those of the
                                                      image under ROOT/image

Only what the Dockerfile uses is understood (continuation lines, ARG, WORKDIR, RUN with
--mount options, COPY --from, ENV, USER, HEALTHCHECK, ENTRYPOINT, CMD): anything else
stops with an error, so that a change to the Dockerfile cannot pass here unseen.
"""

import json
import os
import re
import shlex
import shutil
import sys


def instructions(path):
    """(stage, INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    stage, logical = -1, ""
    with open(path, encoding="utf-8") as dockerfile:
        lines = dockerfile.read().splitlines()
    for line in lines + [""]:
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        if logical.strip():
            name, _, args = logical.strip().partition(" ")
            name = name.upper()
            if name == "FROM":
                stage += 1
            yield stage, name, args.strip()
        logical = ""


def rebase(token, root):
    """An absolute path (alone, or as the value of NAME=) moved under root."""
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*=)?(/.*)", token)
    if not match:
        return token
    return (match.group(1) or "") + root + match.group(2)


def shell_words(words):
    """Words as one shell command line; operators between commands stay operators."""
    return " ".join(w if w in ("&&", "||", ";", "|") else shlex.quote(w) for w in words)


def steps(dockerfile, base):
    """The assignments check-image-steps.sh evaluates."""
    out = {"BUILD_RUN": [], "RUNTIME_ENV": [], "RUNTIME_RUN": []}
    for stage, name, args in instructions(dockerfile):
        prefix = "BUILD" if stage == 0 else "RUNTIME"
        root = base + ("/build" if stage == 0 else "/image")
        if name in ("FROM", "LABEL", "EXPOSE", "ARG"):
            continue
        if name == "VOLUME":
            out["RUNTIME_VOLUME"] = root + json.loads(args)[0]
        elif name == "WORKDIR":
            out[prefix + "_WORKDIR"] = root + args
        elif name == "COPY" and stage == 0:
            if args != ". .":
                sys.exit(f"unexpected COPY in the build stage: {args}")
        elif name == "COPY":
            words = shlex.split(args)
            if len(words) != 3 or words[0] != "--from=build":
                sys.exit(f"unexpected COPY in the runtime stage: {args}")
            out["RUNTIME_COPY_FROM"] = base + "/build" + words[1]
            out["RUNTIME_COPY_TO"] = root + words[2]
        elif name == "RUN":
            words = [w for w in shlex.split(args) if not w.startswith("--mount=")]
            out[prefix + "_RUN"].append(shell_words(rebase(w, root) for w in words))
        elif name == "ENV" and stage == 1:
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                out["RUNTIME_ENV"].append(f"{key}={rebase(value, root)}")
        elif name == "USER":
            out["RUNTIME_USER"] = args
        elif name == "HEALTHCHECK":
            command = args[args.index("CMD ") + 4:]
            out["RUNTIME_HEALTHCHECK"] = json.loads(command)
        elif name in ("ENTRYPOINT", "CMD"):
            out["RUNTIME_" + name] = json.loads(args)
        else:
            sys.exit(f"check-image-steps does not know {name} {args} (stage {stage})")
    lines = []
    for key, value in out.items():
        if isinstance(value, list):
            lines.append(f"{key}=({' '.join(shlex.quote(v) for v in value)})")
        else:
            lines.append(f"{key}={shlex.quote(value)}")
    return "\n".join(lines)


def ignore_patterns(path):
    """.dockerignore's patterns as (regex, excludes) pairs, in order."""
    patterns = []
    with open(path, encoding="utf-8") as ignore:
        for line in ignore:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            excludes = not line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            regex = ""
            i = 0
            while i < len(pattern):
                if pattern.startswith("**/", i):
                    regex += "(?:.*/)?"
                    i += 3
                elif pattern.startswith("**", i):
                    regex += ".*"
                    i += 2
                elif pattern[i] == "*":
                    regex += "[^/]*"
                    i += 1
                elif pattern[i] == "?":
                    regex += "[^/]"
                    i += 1
                else:
                    regex += re.escape(pattern[i])
                    i += 1
            patterns.append((re.compile(regex + r"\Z"), excludes, pattern))
    return patterns


def ignored(relative, patterns):
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for regex, excludes, _ in patterns:
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = excludes
    return verdict


def prunable(relative, patterns):
    """Whether nothing under the ignored directory `relative` can be let through again."""
    return ignored(relative, patterns) and not any(
        not excludes and (text.startswith(relative + "/") or "*" in text)
        for _, excludes, text in patterns
    )


def copy_context(dockerfile, src, dest):
    """Copies the build context; prints how many files it holds."""
    ignore = os.path.join(os.path.dirname(os.path.abspath(dockerfile)), ".dockerignore")
    patterns = ignore_patterns(ignore) if os.path.exists(ignore) else []
    count = 0
    for directory, subdirs, files in os.walk(src):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not prunable(os.path.relpath(os.path.join(directory, d), src), patterns)
        )
        for file in sorted(files):
            path = os.path.join(directory, file)
            relative = os.path.relpath(path, src)
            if ignored(relative, patterns):
                continue
            target = os.path.join(dest, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)
            count += 1
    print(count)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "context":
        copy_context(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "steps":
        print(steps(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
