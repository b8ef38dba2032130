"""Action-side launcher: the actionloop contract of OpenWhisk's Python runtime, stdlib only.

Run as ``python -u launcher.py <result-fd> [<module,module>]`` in the container's
working directory (the optional modules are imported up front by stem cells).
It is the same contract as openwhisk-runtime-python's launcher.py, with one
addition so that a process can be started before its code exists (a prewarmed
"stem cell"): the first stdin line is the init message
``{"init": {"main": "main", "env": {...}}}``. The
container manager has already written ``main__.py`` (single file) or extracted
the zip (``__main__.py`` renamed to ``main__.py``) into the working directory.

Then, as in OpenWhisk: one JSON line per run on stdin; every key but ``value``
becomes ``__OW_<KEY>``; ``main(value)``; an exception becomes ``{"error": str(ex)}``
with the traceback on stderr; one result line on fd 3.

Log sentinels: in OpenWhisk the Go proxy writes them after each run. Here the
launcher writes them itself, in the same order: flush stdout/stderr, the fd-3
line, then the sentinels. When the manager has both sentinels, all of the run's
output -- logs and anything the action wrote to fd 3 -- is already in the pipes.

Memory is limited from outside, by the container's cgroup (memory.py), not here:
no address-space cap. A MemoryError (an allocation the kernel refused) ends the
process with MEMORY_EXIT: in production a memory blow-up is an OOM kill, a
developer error, not a handled exception.
"""

import json
import os
import sys
import traceback

SENTINEL = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n"
MEMORY_EXIT = 86


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def _end_of_activation():
    _flush()
    # Raw writes: the action may have replaced sys.stdout; a leading newline is not
    # written, the manager splits a sentinel glued to an unterminated line.
    os.write(1, SENTINEL)
    os.write(2, SENTINEL)


def _reply(out, obj):
    try:
        # NaN/Infinity are not JSON: the Go proxy rejects them, so refuse them here.
        data = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except Exception:
        # Not serialisable (a set, bytes, NaN...): the proxy classifies "null" as
        # "did not return a dictionary or array", a developer error as in OpenWhisk.
        traceback.print_exc(file=sys.stderr)
        data = b"null"
    _flush()
    out.write(data + b"\n")
    out.flush()
    _end_of_activation()


def _activate_virtualenv():
    venv = os.path.abspath("virtualenv")
    if not os.path.isdir(venv):
        return
    activate = os.path.join(venv, "bin", "activate_this.py")
    if not os.path.exists(activate):
        raise RuntimeError("Invalid virtualenv. Zip file does not include 'activate_this.py'.")
    with open(activate) as f:
        exec(compile(f.read(), activate, "exec"), {"__file__": activate})


def _init(spec):
    for key, value in (spec.get("env") or {}).items():
        os.environ[key] = value if isinstance(value, str) else json.dumps(value)
    _activate_virtualenv()
    sys.path.insert(0, os.getcwd())
    module = __import__("main__")
    name = spec.get("main") or "main"
    try:
        return getattr(module, name)
    except AttributeError:
        raise RuntimeError(f"The action has no function named '{name}'.") from None


def main():
    # The launcher's own directory must not shadow the action's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    fd = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    # A stem cell may import heavy libraries (numpy...) before it knows its action.
    for name in filter(None, (sys.argv[2] if len(sys.argv) > 2 else "").split(",")):
        try:
            __import__(name)
        except Exception:
            pass
    out = os.fdopen(3, "wb")
    stdin = sys.stdin.buffer
    first = stdin.readline()
    if not first:
        return
    try:
        action = _init(json.loads(first)["init"])
    except BaseException as ex:  # noqa: BLE001 - any init failure is reported, not raised
        traceback.print_exc(file=sys.stderr)
        _reply(out, {"ok": False, "error": f"{type(ex).__name__}: {ex}"})
        return
    if os.environ.get("__OW_WAIT_FOR_ACK", ""):
        out.write(b'{"ok": true}\n')
        out.flush()
    while True:
        line = stdin.readline()
        if not line:
            break
        args = json.loads(line)
        payload = {}
        for key, value in args.items():
            if key == "value":
                payload = value
            else:
                try:
                    os.environ["__OW_" + key.upper()] = str(value)
                except ValueError:  # an embedded NUL cannot be an environment value
                    pass
        try:
            res = action(payload)
        except MemoryError:
            traceback.print_exc(file=sys.stderr)
            _end_of_activation()
            os._exit(MEMORY_EXIT)
        except Exception as ex:
            print(traceback.format_exc(), file=sys.stderr)
            res = {"error": str(ex)}
        _reply(out, res)


if __name__ == "__main__":
    main()
