# r2-bench sandbox wrapper: run with `python3 -I -c <this>`, the job as JSON on stdin.
# Limits memory (RLIMIT_AS), CPU time and file sizes, disables sockets and process
# spawning, sends the candidate's own output to /dev/null and reports one JSON line
# (tagged with the job's nonce) on the original stdout.
import json, os, sys, resource


def _main():
    job = json.loads(sys.stdin.read())
    nonce = job.pop("nonce")
    out_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    sys.stdin = open(os.devnull)
    sys.stdout = open(os.devnull, "w")

    def report(status, msg=""):
        line = json.dumps({"nonce": nonce, "status": status, "msg": msg})
        os.write(out_fd, (line + "\n").encode())
        os._exit(0)

    mem, cpu = int(job["mem"]), int(job["cpu"])
    for lim, val in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, 16 << 20),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(lim, (val, val))
        except (ValueError, OSError):
            pass
    sys.setrecursionlimit(3000)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # P3 answers can be huge integers; RLIMIT_AS bounds them

    import ast, socket, subprocess, typing

    def _denied(*args, **kwargs):
        raise OSError("disabled in the r2-bench sandbox")

    class _NoSocket(socket.socket):
        # Still a class (modules subclass socket.socket at import time); cannot be made.
        def __init__(self, *args, **kwargs):
            raise OSError("network access is disabled in the r2-bench sandbox")

    socket.socket = socket.SocketType = _NoSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                 "socketpair", "fromfd"):
        setattr(socket, name, _denied)
    subprocess.Popen = _denied
    for name in ("system", "popen", "fork", "forkpty", "execv", "execve", "execvp",
                 "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
                 "posix_spawn", "posix_spawnp", "kill", "killpg"):
        if hasattr(os, name):
            setattr(os, name, _denied)

    def short(e):
        return (type(e).__name__ + ": " + str(e))[:500]

    def run(src, env, what):
        try:
            exec(compile(src, "<" + what + ">", "exec"), env)
        except MemoryError:
            report("fail", what + ": memory limit exceeded")
        except SystemExit as e:
            report("fail", what + ": exited early (SystemExit %r)" % (e.code,))
        except BaseException as e:
            report("fail", what + ": " + short(e))

    prelude = "from typing import *\nimport math\n"
    mode = job["mode"]
    if mode == "mbpp":
        env = {"__name__": "__candidate__"}
        run(job["code"], env, "candidate code")
        run(job["setup"], env, "test setup")
        for t in job["tests"]:
            run(t, env, "test `" + t.strip()[:200] + "`")
        report("pass")
    elif mode == "p3":
        answer = job["answer"]
        if len(answer) > 16_000_000:
            report("fail", "answer is too long")
        try:
            x = ast.literal_eval(answer.strip())
        except MemoryError:
            report("fail", "answer is not a Python literal: memory limit exceeded")
        except BaseException as e:
            report("fail", "answer is not a Python literal: " + short(e))
        if not type_ok(x, job["ans_type"].replace(" ", "")):
            report("fail", "answer has type %s, expected %s" % (type(x).__name__, job["ans_type"]))
        env = {"__name__": "__puzzle__"}
        run(prelude + job["sat"], env, "sat")
        try:
            result = env["sat"](x)
        except MemoryError:
            report("fail", "sat(x): memory limit exceeded")
        except BaseException as e:
            report("fail", "sat(x) raised " + short(e))
        if result is True:
            report("pass")
        report("fail", "sat(x) returned %r" % (result,))
    elif mode == "solve":
        env = {"__name__": "__puzzle__"}
        run(prelude + job["code"], env, "solution")
        try:
            report("pass", repr(env["sol"]()))
        except BaseException as e:
            report("fail", "sol() raised " + short(e))
    report("error", "unknown mode " + repr(mode))


def type_ok(x, t):
    if t.startswith("List[") and t.endswith("]"):
        return isinstance(x, list) and all(type_ok(v, t[5:-1]) for v in x)
    if t == "int":
        return type(x) is int
    if t == "float":
        return type(x) in (int, float)
    if t == "str":
        return type(x) is str
    if t == "bool":
        return type(x) is bool
    return True


_main()
