"""The user documentation: README.md, docs/ (an mkdocs site) and benchmarks/RESULTS.md.

- The site builds with `mkdocs build --strict` (no warnings: broken links,
  anchors or docstrings the API reference cannot parse). Skipped only when
  mkdocs is not installed and the environment variable CI is unset; in CI a
  missing mkdocs fails.
- The README stays a short user's guide that points at nothing a user does not
  have (private notes, issue numbers, dated entries), and every relative link
  in it and in docs/ resolves.
- The README's Python examples run as written (with the op library).
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 280

# Links: [text](target) or [text](target "title"); images too.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)

# What a user cannot follow: private notes, issue trackers they cannot see,
# lab-notebook dates.
_FORBIDDEN = [
    (re.compile(r"shared/"), "a path under shared/"),
    (re.compile(r"QUALITY\.md|DESIGN\.md|ALGORITHMS\.md"), "a private notes file"),
    (re.compile(r"\bissue\s*#?\d+", re.I), "an issue number"),
    (re.compile(r"\bthe issue(?:'s)?\b", re.I), "'the issue'"),
    (re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b"), "a dated entry"),
    (re.compile(r"\b(?:this|that|the) session\b", re.I), "a work session"),
]


def _user_docs():
    """README.md, benchmarks/RESULTS.md and every page under docs/."""
    return [README, ROOT / "benchmarks" / "RESULTS.md", *sorted(DOCS.rglob("*.md"))]


def _without_code(text):
    """Markdown text with fenced code blocks and inline code removed."""
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading):
    """The anchor mkdocs' toc (and GitHub) give a heading."""
    heading = re.sub(r"`", "", heading)
    heading = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", heading)


def _anchors(path):
    return {_slug(h) for h in _HEADING.findall(_FENCE.sub("", path.read_text()))}


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def test_mkdocs_build_strict(tmp_path):
    missing = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python")
               if not _installed(m)]
    if missing:
        message = (f"{', '.join(missing)} not installed: "
                   f"pip install mkdocs 'mkdocstrings[python]'")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert (tmp_path / "site" / "api" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("tf_sampled.samplers.KernelSampler", "tf_sampled.samplers.AdversarialSampler",
                 "tf_sampled.random.adversarial_candidate_sampler",
                 "tf_sampled.layers.SampledSoftmax", "tf_sampled.optimizers.LazyAdam"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.md has {len(lines)} lines (< {README_MAX_LINES}): move details to docs/")


def test_readme_names_every_op():
    """The README's op list holds every op the library registers."""
    readme = README.read_text()
    names = set()
    for source in (ROOT / "custom_ops" / "ops").glob("*.cc"):
        names.update(re.findall(r'REGISTER_OP\("TfSampled>(\w+)"\)', source.read_text()))
    assert names
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"README.md's op list lacks {missing}"


@pytest.mark.parametrize("path", _user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_references_users_cannot_follow(path):
    text = path.read_text()
    found = [f"{what}: {m.group(0)!r} (line {text.count(chr(10), 0, m.start()) + 1})"
             for pattern, what in _FORBIDDEN for m in pattern.finditer(text)]
    assert not found, f"{path.relative_to(ROOT)} refers to what users do not have: {found}"


@pytest.mark.parametrize("path", [README, *sorted(DOCS.rglob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in _LINK.findall(_without_code(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading with anchor #{anchor})")
    assert not broken, f"{path.relative_to(ROOT)} has broken links: {broken}"


def _readme_python_blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_examples_run(tmp_path):
    """Every Python block of the README runs as written, each in a fresh process."""
    blocks = _readme_python_blocks()
    assert blocks, "README.md has no Python examples"
    try:
        import tf_sampled  # pylint: disable=import-outside-toplevel
        tf_sampled.load_ops()
    except Exception as error:  # pylint: disable=broad-except
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the op library does not load: {error}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]), TF_CPP_MIN_LOG_LEVEL="2")
    for i, block in enumerate(blocks):
        script = tmp_path / f"readme_example_{i}.py"
        script.write_text(block)
        result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, (
            f"README.md's Python example {i} failed:\n{block}\n--- output:\n"
            f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
