"""The command line's last line of defence (``cli.main``): what ends a command the user can act on is
said in one line with what to do, never as a traceback."""

import os
import subprocess
import sys

import pytest

from flickerless import cli, errors
from flickerless.cli import main

DEFLICKER = ["deflicker", "--guide", "g.mp4", "--style", "s.mp4", "-o", "o.mp4"]


def _fails_with(monkeypatch, error):
    """deflicker, whatever its arguments, ending in ``error``."""
    def cmd(args):
        raise error

    monkeypatch.setattr(cli, "cmd_deflicker", cmd)


# torch's CPU allocator on Linux under a memory limit (ulimit -v 1100000), and oneDNN's convolution there
CPU_ALLOC = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
             "allocate 1622016 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("error, says", [
    (RuntimeError(CPU_ALLOC), "error: out of memory (can't allocate memory: you tried to allocate 1622016 bytes); "),
    (RuntimeError("could not create a primitive"), "error: possibly out of memory (oneDNN: could not create a primitive)"),
    (MemoryError("Unable to allocate 1.55 MiB for an array with shape (2, 144, 176, 8) and data type float32"),
     "error: out of memory (Unable to allocate 1.55 MiB"),
])
def test_running_out_of_host_memory_is_one_line_saying_what_needs_less(monkeypatch, capsys, error, says):
    """torch's CPU allocator on Linux says "can't allocate memory", which was not taken for running out of
    memory: a traceback (exit 1), as was oneDNN's "could not create a primitive" that the same limit gave."""
    _fails_with(monkeypatch, error)
    assert main(DEFLICKER) == 2
    err = capsys.readouterr().err
    assert says in err and "memory limit (ulimit -v" in err and "a smaller --batch" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cpu_allocation_failures_halve_batches_and_a_primitive_that_fails_is_only_perhaps_one():
    """in_batches halves a batch the CPU could not allocate, as it does one the GPU could not; oneDNN's
    failure says no reason, so it is not retried smaller (which would hide any other cause)."""
    assert errors.out_of_memory(RuntimeError(CPU_ALLOC))
    assert not errors.out_of_memory(RuntimeError("could not create a primitive"))
    assert errors.perhaps_out_of_memory(RuntimeError("could not create a primitive"))


def test_numba_s_library_unmapped_for_want_of_memory_is_said_as_memory(tmp_path):
    """Under a memory limit the loader cannot map libllvmlite.so, and llvmlite says that "the permissions
    are incorrect" (and the command line said that). A numba that fails to import as it did then, in a
    fresh process."""
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "try:\n    raise OSError('/x/libllvmlite.so: failed to map segment from shared object')\n"
        "except OSError:\n    raise OSError(\"Could not find/load shared object file 'libllvmlite.so' from resource "
        "location: 'llvmlite.binding'. This could mean ... that the permissions are incorrect\")\n")
    code = ("import sys\nfrom flickerless.cli import main\n"
            "sys.exit(main(['deflicker', '--guide', sys.argv[1], '--style', sys.argv[1], '-o', sys.argv[2], '-q', "
            "'--device', 'cpu', '--no-cuts']))\n")
    from flickerless import video

    clip = tmp_path / "c.mp4"
    rng = __import__("numpy").random.default_rng(0)
    video.write(clip, (rng.random((3, 32, 48, 3)) * 40 + 100).astype("uint8"), fps=10)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    r = subprocess.run([sys.executable, "-c", code, str(clip), str(tmp_path / "o.mp4")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "libllvmlite.so: failed to map segment" in r.stderr and "possibly out of memory" in r.stderr
    assert "permissions" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("module, says", [
    ("cv2", 'opencv-python-headless, which flickerless needs, is not installed (No module named \'cv2\'): pip install '
            '"opencv-python-headless'),
    ("scipy", 'scipy, which flickerless needs, is not installed (No module named \'scipy\'): pip install "scipy'),
    ("peft.tuners", "peft, which flickerless needs, is incomplete (No module named 'peft.tuners'): pip install "
                    '--force-reinstall --no-deps "peft'),
    ("torch", "install it as pytorch.org says"),
])
def test_a_missing_requirement_is_one_line_naming_the_pip_command(monkeypatch, capsys, module, says):
    """After `pip install --no-deps` (or an environment broken since), eval, run, train and the engine demo
    met the missing module where they first imported it: a traceback. Said in one line, exit 2."""
    _fails_with(monkeypatch, ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert main(DEFLICKER) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.count("\n") == 1


def test_a_missing_module_not_a_requirement_is_not_said_as_one(monkeypatch):
    _fails_with(monkeypatch, ModuleNotFoundError("No module named 'flickerless.nothing'", name="flickerless.nothing"))
    with pytest.raises(ModuleNotFoundError):
        main(DEFLICKER)


def test_a_ctrl_c_inside_a_c_extension_s_import_is_an_interruption(monkeypatch, capsys):
    """A Ctrl-C while numpy's C extensions import comes out as their ImportError ("PyCapsule_Import could not
    import module 'datetime'"), raised while handling the KeyboardInterrupt: a traceback and exit status 1.
    It is an interruption (130); an ImportError of its own is still raised as it is."""
    def cut():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError('PyCapsule_Import could not import module "datetime"') from None

    try:
        cut()
    except ImportError as e:
        _fails_with(monkeypatch, e)
    assert main(DEFLICKER) == 130
    err = capsys.readouterr().err
    assert err == "flickerless: interrupted; the output was not written\n"
    _fails_with(monkeypatch, ImportError("cannot import name 'x' from 'y'"))
    with pytest.raises(ImportError, match="cannot import name"):
        main(DEFLICKER)


def test_the_requirements_said_are_pyproject_s():
    """The import names the command line knows (to say a missing one) are those of every dependency."""
    import re
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(cli._REQUIREMENTS.values()) == sorted(re.split(r"[<>=!~;\s\[]", d)[0].lower() for d in deps)


def test_deflicker_without_numba_says_once_that_it_runs_slower(monkeypatch, caplog):
    """numba missing (an install made with --no-deps) ran the CPU 2.5-3x slower without a word."""
    import logging

    import torch

    import flickerless.blend.cpu_kernels as cpu_kernels
    import flickerless.blend.patchmatch as pm

    monkeypatch.setattr(cpu_kernels, "nb", None)
    pm._say_without_numba.cache_clear()
    with caplog.at_level(logging.INFO, logger="flickerless"):
        assert pm._kernels("auto", torch.device("cpu")) is None
        assert pm._kernels("auto", torch.device("cpu")) is None
    said = [r.getMessage() for r in caplog.records if "numba" in r.getMessage()]
    assert len(said) == 1 and 'pip install "numba>=0.59"' in said[0]


def test_the_command_line_loads_before_numpy_so_an_early_ctrl_c_is_said_in_one_line():
    """A Ctrl-C while the `flickerless` script imports cli (before main() can catch it) printed a Python
    traceback; numpy was most of that time (0.1-0.2 s). main() catches one while the commands load, so
    cli itself imports none of them. In a fresh process."""
    code = "import sys\nimport flickerless.cli\nprint(sorted({'numpy', 'torch'} & set(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _tiny_clip(path):
    import numpy as np

    from flickerless import video

    rng = np.random.default_rng(0)
    video.write(path, (rng.random((3, 32, 48, 3)) * 40 + 100).astype(np.uint8), fps=10)
    return path


def test_a_name_the_output_s_encoding_cannot_hold_is_printed_escaped(tmp_path):
    """With PYTHONIOENCODING=ascii, `info` on a non-ASCII name ended in a UnicodeEncodeError traceback. In a
    fresh process, whose streams Python set up so."""
    clip = _tiny_clip(tmp_path / "日本.mp4")
    code = "import sys\nfrom flickerless.cli import main\nsys.exit(main(['info', sys.argv[1]]))\n"
    r = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONIOENCODING="ascii"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\\u65e5\\u672c.mp4" in r.stdout and "Traceback" not in r.stderr


def test_a_tilde_is_expanded_in_every_path_but_not_in_a_prompt(tmp_path, monkeypatch, capsys):
    """The shell expands ~ only at a word's start: `--guide=~/clip.mp4` reached the command as it was and
    was not found, while `--model=~/m` worked (expanded where the model is found)."""
    import flickerless.commands.eval as eval_cmd

    monkeypatch.setenv("HOME", str(tmp_path))
    _tiny_clip(tmp_path / "c.mp4")
    assert main(["info", "~/c.mp4"]) == 0
    assert "c.mp4" in capsys.readouterr().out
    given = []
    monkeypatch.setattr(cli, "cmd_deflicker", given.append)
    main(["deflicker", "--guide=~/g.mp4", "--style", "~/s.mp4", "-o", "~/o", "--keyframes=~/k", "--tmp=~/t"])
    monkeypatch.setattr(eval_cmd, "cmd_eval", given.append)
    main(["eval", "--video=~/v.mp4", "--prompt", "~/not a path", "--json=~/e.json"])
    d, e = given
    assert (d.guide, d.style, d.output, d.keyframes, d.tmp) == tuple(str(tmp_path / n) for n in ("g.mp4", "s.mp4", "o",
                                                                                                  "k", "t"))
    assert (e.video, e.json, e.prompt) == (str(tmp_path / "v.mp4"), str(tmp_path / "e.json"), "~/not a path")


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="a SIGINT sent to a process")
@pytest.mark.parametrize("at", ["flickerless.weights", "logging", "flickerless.cli", "argparse"])
@pytest.mark.parametrize("run", ["script", "module"])
def test_a_ctrl_c_while_the_command_imports_is_one_line(tmp_path, at, run):
    """A Ctrl-C in the command's first ~0.05 s, while the package and cli import (before main() can catch
    it), printed a KeyboardInterrupt traceback through the import machinery. Sent here as the module
    ``at`` is imported, by a finder that sitecustomize puts first, into the `flickerless` script (as pip
    writes it) and ``python -m flickerless``. A program that imports the library keeps Python's ways."""
    import signal

    (tmp_path / "sitecustomize.py").write_text(
        "import signal, sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {at!r} and 'flickerless' in sys.modules:\n"
        "            sys.meta_path.remove(self)\n"
        "            signal.raise_signal(signal.SIGINT)\n"
        "sys.meta_path.insert(0, Stop())\n")
    script = tmp_path / "flickerless"
    script.write_text("import sys\nfrom flickerless.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    cmd = [str(script)] if run == "script" else ["-m", "flickerless"]
    r = subprocess.run([sys.executable, *cmd, "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode in (130, -signal.SIGINT), r.stderr[-2000:]  # (killed by SIGINT: 130 to a shell)
    assert r.stderr == "flickerless: interrupted\n"
    code = "import sys\nimport flickerless\nprint(sys.excepthook is sys.__excepthook__)\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout == "True\n"
