"""The docs as the CLI's tests: the fenced shell blocks of README.md and docs/*.md, run as a user runs them.

A block's fence says what it is:
  ```sh                  a user runs it: a tour runs it in a fresh `bash`, in the page's order
  ```sh background       a server: started, waited for (its ports answer), stopped when the tour ends
  ```sh skip=REASON      not runnable on this machine, for one of SKIP_REASONS; its sidrec commands are still
                         parsed by the CLI's parser (a renamed or removed flag fails the suite)
  ```text [file=NAME]    output, listings, file contents; never run (file=NAME: written to NAME first)
Each page with runnable blocks belongs to one tour (TOURS): a working directory in which its pages run
whole, in order, so a block can use what the blocks before it made. tests/test_docs.py checks that every
runnable block is in a tour and that every tour is run by a test.

What changes between the page and the run is sizes, paths and ports, through SIZES below and nothing
else: the pages give a real corpus's sizes, the suite a tiny world's.
"""

import dataclasses
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

# Pages that run in one working directory, in this order.
TOURS = {
    "operating": ["docs/operating.md", "docs/serving.md"],  # serving.md's examples use the operating run
    "pages": ["docs/simulator.md", "docs/rqvae.md", "docs/materialize.md", "docs/transform.md", "docs/ranker.md"],
    "your data": ["docs/your_data.md"],  # tests/test_report.py: the report of its experiment
    "contracts": ["docs/contracts.md"],
}

SKIP_REASONS = {
    "ci": "the README's two commands: CI runs `make test`; `make demo` is every stage at the demo's size",
    "gcp": "needs a Google Cloud project (Dataflow, GCS)",
    "cluster": "needs several machines",
    "tpu": "needs a Cloud TPU",
    "tensorflow_model_server": "needs TF Serving's own binary, not installed here",
    "hours": "a study takes hours at the sizes its findings need (tests/test_study.py runs its stage on a tiny "
             "world; the suite's shell tours run every command a study is made of)",
}

# The one place a documented command is changed: per command, size flags appended (argparse keeps the
# last value of a flag given twice), and sizes named in values. A real corpus's sizes on the page, a
# tiny world's in the suite.
SIZES = {
    "simulate": ["--num_items", "1500", "--num_users", "200", "--impressions_per_day", "1500",
                 "--embedding_dim", "32", "--num_days", "7"],
    "train-rqvae": ["--encoder_dims", "32,8", "--codebook_size", "16", "--batch_size", "128", "--max_epochs", "6",
                    "--patience", "2", "--kmeans_iterations", "5"],
    "daily": ["--holdout_per_mille", "200"],  # enough held-out rows to bless on 1,500 impressions a day
}
# Sizes given as values: hash buckets and SPM pieces (8,192 on the page, 512 on the tiny world; names such
# as sid_spm_8192 follow), and model seeds.
VALUE_SIZES = [(r"(?<![\d.])8192(?!\d)", "512"), (r"--seeds 3\b", "--seeds 2")]


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    info: str
    text: str

    @property
    def kind(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def options(self) -> dict[str, str]:
        return dict(o.partition("=")[::2] for o in self.info.split()[1:])

    @property
    def runnable(self) -> bool:
        return self.kind == "sh" and "skip" not in self.options

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """Every fenced block of a page (README.md or docs/NAME.md), in order."""
    found, info, start, body = [], None, 0, []
    for number, line in enumerate((ROOT / page).read_text().splitlines(), 1):
        if line.startswith("```") and info is None:
            info, start, body = line[3:].strip(), number, []
        elif line.startswith("```") and info is not None:
            found.append(Block(page, start, info, "\n".join(body) + "\n"))
            info = None
        elif info is not None:
            body.append(line)
    assert info is None, f"{page}:{start}: a fenced block is not closed"
    return found


def commands(text: str) -> list[str]:
    """The logical lines of a shell block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"[ \t]*\\\n\s*", " ", text)
    return [line for line in (_strip_comment(raw).strip() for raw in joined.splitlines()) if line]


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # inside quotes or a word is kept)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def sized(command: str) -> str:
    """A documented command at the tiny world's sizes (see SIZES)."""
    for pattern, tiny in VALUE_SIZES:
        command = re.sub(pattern, tiny, command)
    words = command.split()
    if len(words) > 1 and words[0] == "sidrec" and words[1] in SIZES:
        command += " " + " ".join(shlex.quote(w) for w in SIZES[words[1]])
    return command


def sidrec_argv(command: str) -> list[str] | None:
    """The arguments of a sidrec command (environment assignments before it skipped), else None."""
    words = shlex.split(command)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    return words[1:] if words and words[0] == "sidrec" else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tour:
    """Runs the runnable blocks of a tour's pages, in order, in `workdir`; keeps what each printed.

      tour = Tour("operating", tmp_path)
      tour.run_page("docs/operating.md", on_block=check)   # check(number, block, stdout) after each block
      tour.output("docs/operating.md", 2)                  # stdout of the page's 2nd runnable block
      tour.run("sidrec daily ...")                         # a command beside the pages, run alike
      tour.stop()                                          # the servers its background blocks started
    """

    def __init__(self, name: str, workdir, paths: dict[str, str] | None = None, timeout: float = 600.0):
        self.name, self.pages, self.workdir, self.timeout = name, TOURS[name], str(workdir), timeout
        # Paths a page names for the reader's machine (a data set's place), and where they are here.
        self.paths = {"/srv/": self.workdir + "/", **(paths or {})}
        os.makedirs(self.workdir, exist_ok=True)
        # The documented ports, each on a free one here (tours may run side by side).
        self.ports = {"8500": free_port(), "8501": free_port()}
        self.outputs: dict[tuple[str, int], str] = {}
        self.stderr: list[tuple[str, str]] = []  # (where, what a block wrote to stderr), blocks that wrote any
        self.servers: list[tuple[subprocess.Popen, str]] = []
        bin_dir = os.path.dirname(sys.executable)
        self.env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        self.env.pop("TF_USE_LEGACY_KERAS", None)  # what a fresh shell has: the package sets it itself
        self.ran: list[str] = []  # every command run, as run (shown when one fails)
        self.seconds: list[tuple[str, float]] = []  # (where, wall seconds) of each block run

    def script(self, block: Block) -> str:
        """The block as the tour runs it: each command at the tiny world's sizes, its paths and ports here."""
        lines = []
        for command in commands(self.placed(block.text)):
            for documented, port in self.ports.items():
                command = re.sub(rf"(?<=[:= ]){documented}\b", str(port), command)
            lines.append(sized(command))
        return "\n".join(lines) + "\n"

    def placed(self, text: str) -> str:
        for documented, here in self.paths.items():
            text = text.replace(documented, here)
        return text

    def run_page(self, page: str, on_block=None) -> list[str]:
        """Runs every runnable block of `page`, in order; returns their stdout. `on_block(number, block, stdout)`
        is called after each."""
        assert page in self.pages, f"{page} is not in tour {self.name}: {self.pages}"
        printed = []
        for index, block in enumerate(b for b in blocks(page) if b.runnable or "file" in b.options):
            if "file" in block.options:
                pathlib.Path(self.workdir, block.options["file"]).write_text(self.placed(block.text))
                continue
            script = self.script(block)
            self.ran.append(f"# {block.where()}\n{script}")
            if "background" in block.options:
                ports = [p for p in self.ports.values() if re.search(rf"[:= ]{p}\b", script)]
                printed.append(self.start_server(script, ports, block.where()))
            else:
                printed.append(self._run(block, script))
            self.outputs[(page, len(printed))] = printed[-1]
            if on_block:
                on_block(len(printed), block, printed[-1])
        return printed

    def run(self, *command_lines: str) -> str:
        """Commands beside the pages (the same loop for another kind), run as a block is; their stdout."""
        block = Block(f"tour {self.name}", 0, "sh", "\n".join(command_lines) + "\n")
        script = self.script(block)
        self.ran.append(f"# beside the pages\n{script}")
        return self._run(block, script)

    def _run(self, block: Block, script: str) -> str:
        started = time.time()
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.workdir, env=self.env,
                                capture_output=True, text=True, timeout=self.timeout)
        self.seconds.append((f"{block.where()} {script.strip()[:60]}", round(time.time() - started, 1)))
        if result.returncode != 0:
            raise AssertionError(f"{block.where()}: exit {result.returncode}\n$ {script}\nstdout:\n{result.stdout}\n"
                                 f"stderr:\n{result.stderr}")
        if result.stderr:
            self.stderr.append((block.where(), result.stderr))
        return result.stdout

    def start_server(self, script: str, ports: list[int], where: str = "beside the pages") -> str:
        """Starts a server command (left running until `stop`) and waits until every port answers; its log so far."""
        log = os.path.join(self.workdir, f"server-{len(self.servers)}.log")
        self.ran.append(f"# {where} (background)\n{script}")
        with open(log, "w") as out:
            process = subprocess.Popen(["bash", "-c", "exec " + script.strip()], cwd=self.workdir, env=self.env,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.servers.append((process, log))
        deadline = time.time() + 120
        while not all(_answers(p) for p in ports):
            if process.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{where}: the server did not come up (exit {process.poll()})\n$ {script}"
                                     f"\n{pathlib.Path(log).read_text()}")
            time.sleep(0.2)
        return pathlib.Path(log).read_text()

    def output(self, page: str, number: int) -> str:
        """What the page's `number`-th runnable block printed (1-based)."""
        return self.outputs[(page, number)]

    def server_log(self, index: int = 0) -> str:
        return pathlib.Path(self.servers[index][1]).read_text()

    def stop(self) -> None:
        for process, _ in self.servers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
