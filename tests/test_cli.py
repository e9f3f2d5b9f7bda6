"""The command line: `entflash --version`, `--help`, `demo` and its options, usage errors."""

import re
import sys

import pytest
import torch

import entflash
from entflash import demo
from entflash.__main__ import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"entflash {entflash.__version__}"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out


def test_demo_help_does_not_run_the_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--cpu" in out and "--plot" in out
    assert demo.TITLE not in out


@pytest.fixture(scope="module")
def demo_output():
    """The CPU demo's exit status and output, run once for the tests that read it."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["demo", "--cpu"])
    return status, buf.getvalue()


def test_demo_cpu(demo_output):
    status, out = demo_output
    assert status == 0
    assert demo.TITLE in out
    assert 'entflash.entmax_attention(q, k, v, alpha=1.5, causal=True, backend="torch")' in out
    assert "q, k: (1, 2, 15, 64)" in out
    assert demo.shading_legend() in out
    assert "shading: ' ' = exactly 0" in out
    assert "exactly-zero weights" in out


def test_demo_cpu_sparsity_table(demo_output):
    """Softmax leaves no visible weight at zero; entmax-1.5 leaves most of them at zero."""
    _, out = demo_output
    zeros = {m[0]: [int(z) for z in re.findall(r"(\d+)% zero", m[1])]
             for m in re.findall(r"^ *([\d.]+) \([^)]*\)(.*)$", out, flags=re.MULTILINE)}
    assert zeros["1"] == [0, 0]
    assert len(zeros["1.5"]) == 2 and min(zeros["1.5"]) > 50
    assert len(zeros["2"]) == 2 and min(zeros["2"]) > 50


def test_demo_maps_show_the_built_patterns():
    q, k, v = demo.example_qkv()
    p, _ = demo.attention_maps(q, k, v, 1.5)
    words = demo.SENTENCE
    for i, w in enumerate(words):
        earlier = [j for j in range(i) if words[j] == w]
        # same-word head: all weight on earlier copies of the word if any, else on the word itself
        on = p[0, i, earlier].sum() if earlier else p[0, i, i]
        assert on.item() == pytest.approx(1.0, abs=1e-5), w
        # previous-token head
        assert p[1, i, max(i - 1, 0)].item() == pytest.approx(1.0, abs=1e-5)
    visible = torch.ones(len(words), len(words), dtype=torch.bool).tril()
    assert (p[:, visible] == 0).float().mean() > 0.8
    soft, _ = demo.attention_maps(q, k, v, 1.0)
    assert (soft[:, visible] > 0).all()


def test_text_map_labels_are_distinct_words():
    """Column headers spell each key word top to bottom, so different words never share a label."""
    words = ["a", "ab", "abc"]
    text = demo.text_maps([torch.eye(3)], words, ["title"]).splitlines()
    header = text[1:4]
    columns = ["".join(line.ljust(20)[5 + 2 * j] for line in header).strip() for j in range(3)]
    assert columns == words
    assert [line.split()[0] for line in text[4:]] == words


def test_demo_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "maps.png"
    assert main(["demo", "--cpu", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in capsys.readouterr().out


def test_demo_plot_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    path = tmp_path / "maps.png"
    assert main(["demo", "--cpu", "--plot", str(path)]) == 2
    captured = capsys.readouterr()
    assert 'pip install "entflash[plot]"' in captured.err
    assert "Traceback" not in captured.err
    assert demo.TITLE not in captured.out
    assert not path.exists()


@pytest.mark.parametrize("argv", [["nonsense"], ["demo", "--nonsense"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bench_gets_its_arguments_untouched(monkeypatch):
    import entflash.bench.__main__ as bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 7)
    argv = ["--d", "64", "--n", "16384", "--causal", "yes", "--help"]
    assert main(["bench", *argv]) == 7
    assert seen == [argv]
