"""The bad-input table: settings of experiments.run, bench, batch_sweep, cache_bench and profile_step,
prompt files and generation settings that cannot work. Each gets one ConfigError line that names
the fix before any model loads (the CLI's exit status 2), never a traceback or a silently wrong
run. Most rows run in-process through the entry points' own path (Hydra's compose, then
run_experiment or batch_sweep, which check everything before they load a model); a few run the
real CLI. Run directories and shipped files have their tables in tests/test_resume.py and
tests/test_shipped_files.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny
from hydra import compose, initialize_config_dir

from experiments.batch_sweep import batch_sweep
from experiments.bench import matrix_strategies
from experiments.cache_bench import cache_bench
from experiments.profile_step import profile_step
from experiments.prompts import load_prompts
from experiments.run import run_experiment
from specdec import ConfigError, Decoder, GenerationConfig
from specdec.strategies import create_strategy
from specdec.tiny import byte_tokenizer

REPO = Path(__file__).resolve().parent.parent

RUN_ROWS = [  # overrides of `python -m experiments.run model=tiny-random`, a fragment of the error
    ("generation.temperature=hot", "generation.temperature must be a number >= 0, 0 for greedy (got 'hot')"),
    ("generation.temperature=1e-45", "use generation.temperature=0 for greedy decoding"),
    ("generation.temperature=1e-6", "is below 1e-05, where the probabilities overflow"),
    ("generation.temperature=-1", "generation.temperature must be a number >= 0"),
    ("generation.temperature=inf", "generation.temperature must be a number >= 0"),
    ("generation.temperature=nan", "generation.temperature must be a number >= 0"),
    ("generation.temperature=true", "generation.temperature must be a number >= 0"),
    ("generation.max_new_tokens=0", "generation.max_new_tokens must be an integer >= 1"),
    ("generation.max_new_tokens=8.5", "generation.max_new_tokens must be an integer >= 1 (got 8.5)"),
    ("generation.max_new_tokens=lots", "generation.max_new_tokens must be an integer >= 1"),
    ("generation.max_new_tokens=null", "generation.max_new_tokens must be an integer >= 1 (got None)"),
    ("generation.top_k=-1", "generation.top_k must be an integer >= 0, 0 to switch it off"),
    ("generation.top_k=2.5", "generation.top_k must be an integer >= 0"),
    ("generation.top_p=0", "generation.top_p must be a number in (0, 1]"),
    ("generation.top_p=1.5", "generation.top_p must be a number in (0, 1]"),
    ("generation.top_p=high", "generation.top_p must be a number in (0, 1]"),
    ("generation.stop_strings=['']", "an empty string would stop every request at once"),
    ("generation.stop_strings=['User:','']", "generation.stop_strings must be a list of non-empty strings"),
    ("generation.stop_strings=abc", "generation.stop_strings must be a list of non-empty strings (got 'abc'"),
    ("generation.stop_strings=[1,2]", "generation.stop_strings must be a list of non-empty strings"),
    ("+generation.temprature=0.5", "bad generation settings"),
    ("runtime.device=tpu", "unknown runtime.device 'tpu': use auto, cpu or cuda"),
    ("runtime.device=1", "runtime.device must be a non-empty string (got 1)"),
    ("runtime.dtype=float8", "unknown runtime.dtype 'float8': use auto or one of float32"),
    ("runtime.dtype=3", "runtime.dtype must be a non-empty string"),
    ("runtime.seed=-1", "runtime.seed must be an integer >= 0"),
    ("runtime.seed=abc", "runtime.seed must be an integer >= 0"),
    ("runtime.warmup=-1", "runtime.warmup must be an integer >= 0"),
    ("runtime.warmup=1.5", "runtime.warmup must be an integer >= 0"),
    ("runtime.threads=0", "runtime.threads must be an integer >= 1, or null"),
    ("runtime.threads=two", "runtime.threads must be an integer >= 1, or null"),
    ("runtime.kv_cache=paged", "runtime.kv_cache must be one of preallocated, dynamic, static"),
    ("runtime.max_length=0", "runtime.max_length must be an integer >= 1, or null"),
    ("runtime.compile=true", "runtime.compile=true needs runtime.kv_cache=static"),
    ("runtime.cuda_graphs=true runtime.kv_cache=static", "runtime.cuda_graphs=true needs a CUDA device"),
    ("runtime.cuda_graphs=yes", "runtime.cuda_graphs must be true or false"),
    ("runtime.layers=magic", "unknown runtime.layers 'magic'"),
    ("runtime.linear=fast", "unknown runtime.linear 'fast'"),
    ("runtime.compile=maybe", "runtime.compile must be true or false"),
    ("runtime.compile=1", "runtime.compile must be true or false"),
    ("dataset.limit=0", "dataset.limit must be an integer >= 1, or null for every prompt"),
    ("dataset.limit=-3", "dataset.limit must be an integer >= 1"),
    ("dataset.limit=abc", "dataset.limit must be an integer >= 1"),
    ("dataset.limit=2.5", "dataset.limit must be an integer >= 1"),
    ("dataset.path=/no/such.jsonl", "dataset.path '/no/such.jsonl' is not a file: give a JSONL file"),
    ("dataset.path=/tmp", "dataset.path '/tmp' is not a file"),
    ("dataset.suite=nope", "unknown dataset.suite 'nope'; shipped suites: embedded"),
    ("dataset.chat_template=maybe", "dataset.chat_template must be auto, true or false"),
    ("draft.num_layers=0", "draft.num_layers must be an integer >= 1, or null"),
    ("draft.head_tokens=0", "draft.head_tokens must be an integer >= 1, or null"),
    ("draft.head_tokens=many", "draft.head_tokens must be an integer >= 1, or null"),
    ("draft.name_or_path=5", "draft.name_or_path must be a non-empty string, or null"),
    ("model.name_or_path=null", "model.name_or_path must be a non-empty string"),
    ("model.device_map=everywhere", "unknown model.device_map 'everywhere': give null, auto, balanced"),
    ("model.device_map=auto", "add runtime.layers=stock runtime.linear=stock runtime.compile=false"),
    ("model.device_map={lm_head:disk} runtime.layers=stock runtime.linear=stock", "set model.offload_folder=DIR"),
    ("model.max_memory={cpu:1GiB}", "model.max_memory bounds the automatic device maps: add model.device_map=auto"),
    ("model.attn_implementation=fast", "unknown model.attn_implementation 'fast'"),
    ("strategy=eagle strategy.draft=/no/such/dir", "no EAGLE draft in '/no/such/dir' (not a directory): train one with"),
    ("strategy=medusa strategy.heads=/tmp", "no draft in /tmp (no config.json): give a directory in one of the layouts"),
    ("strategy.gamma=0", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1"),
    ("strategy.gamma=two", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1 (got 'two')"),
    ("strategy.gamma=2.5", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1"),
    ("strategy.gamma=Auto", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1 (got 'Auto')"),
    ("strategy=eagle_tree strategy.gamma=-2", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1"),
    ("strategy.gamma_schedule=fast", "strategy.gamma_schedule must be one of constant, heuristic"),
    ("strategy.stop_below_prob=2", "strategy.stop_below_prob must be a number in [0, 1]"),
    ("+strategy.gama=4", "strategy draft has no option 'gama'; it takes gamma, gamma_schedule"),
    ("strategy=eagle strategy.tree_nodes=0", "strategy.tree_nodes must be auto (the best predicted size on this device) or an integer >= 1, or null"),
    ("strategy=eagle_tree strategy.tree_nodes=many", "strategy.tree_nodes must be auto (the best predicted size on this device) or an integer >= 1, or null (got 'many')"),
    ("strategy=eagle strategy.tree_topk=x", "strategy.tree_topk must be an integer >= 1"),
    ("strategy=eagle strategy.head_tokens=-5", "strategy.head_tokens must be an integer >= 1, or null"),
    ("strategy=eagle strategy.draft=null", "strategy.draft must be a non-empty string"),
    ("strategy=medusa strategy.tree=abc", "strategy.tree must be auto (the best tree on this device), null (the heads'"),
    ("strategy=medusa strategy.tree=0", "strategy.tree must be auto (the best tree on this device), null"),
    ("strategy=medusa strategy.tree=[[]]", "a list of paths of top-k ranks like [[0], [1], [0, 0]]"),
    ("strategy=medusa strategy.tree=[[0],[-1]]", "strategy.tree must be auto"),
    ("strategy=medusa strategy.acceptance=sloppy", "strategy.acceptance must be one of typical, exact"),
    ("strategy=medusa strategy.posterior_alpha=-1", "strategy.posterior_alpha must be a number >= 0"),
    ("strategy=medusa strategy.posterior_threshold=x", "strategy.posterior_threshold must be a number in [0, 1]"),
    ("strategy=prompt_lookup strategy.max_ngram=0", "strategy.max_ngram must be an integer >= 1"),
    ("strategy=prompt_lookup strategy.num_tokens=lots", "strategy.num_tokens must be an integer >= 1"),
    ("strategy=prompt_lookup +strategy.gamma=3", "strategy prompt_lookup has no option 'gamma'"),
    ("strategy.name=nope", "unknown strategy 'nope'; known strategies: baseline, draft"),
    ("strategy=custom", "strategy=custom needs strategy.target=package.module.ClassName"),
    ("strategy=custom strategy.target=no.such.Class", "cannot import strategy.target='no.such.Class'"),
    ("strategy=custom strategy.target=json.JSONDecoder", "is not a specdec.strategies.Strategy subclass"),
    ("anchors=[hf_nope]", "unknown anchor 'hf_nope'; known anchors: hf_assisted, hf_generate"),
    ("strategy=baseline anchors=[hf_assisted]", "anchor hf_assisted mirrors strategy 'draft': run it too"),
    ("anchors=hf_generate", "anchors must be a list (got 'hf_generate'): e.g. anchors=[hf_generate]"),
    ("cache=radix cache.order=random", "unknown cache.order 'random': use one of fifo, longest_prefix"),
    ("cache=radix cache.min_hit_tokens=0", "cache.min_hit_tokens must be a whole number of tokens, 1 or more (got 0)"),
    ("cache=radix cache.min_hit_tokens=few", "cache.min_hit_tokens must be a whole number of tokens, 1 or more (got 'few')"),
    ("cache=radix cache.min_hit_tokens=2.5", "cache.min_hit_tokens must be a whole number of tokens, 1 or more (got 2.5)"),
    ("generation.batch_size=2 anchors=[hf_assisted]", "anchor hf_assisted decodes one sequence at a time"),
]
BENCH_ROWS = [  # overrides of `python -m experiments.bench model=tiny-random`
    ("matrix=[]", "matrix must be a non-empty list of strategies"),
    ("matrix=[3]", "matrix entry 3 is not a strategy: give a mapping with a name"),
    ("matrix=[{gamma:2}]", "matrix entry {'gamma': 2} is not a strategy"),
    ("matrix=[{name:draft,gamma:0}]", "strategy.gamma must be auto (the best predicted size on this device) or an integer >= 1"),
    ("matrix=[{name:nope}]", "unknown strategy 'nope'"),
    ("matrix=[{name:draft}] anchors=[hf_prompt_lookup]", "mirrors strategy 'prompt_lookup': run it too"),
    ("cost_model_max_k=0", "cost_model_max_k must be an integer >= 1"),
    ("generation.temperature=warm", "generation.temperature must be a number >= 0"),
]
CACHE_BENCH_ROWS = [  # overrides of `python -m experiments.cache_bench model=tiny-random`
    ("workloads=[nope]", "unknown workload 'nope' in workloads: use some of long_unshared, fifo_thrash"),
    ("suites.fifo_thrash.max_bytes=0", "cache.max_bytes must be a whole number of bytes above 0 (got 0)"),
    ("cache.min_hit_tokens=-1", "cache.min_hit_tokens must be a whole number of tokens, 1 or more (got -1)"),
]
PROFILE_STEP_ROWS = [  # overrides of `python -m experiments.profile_step model=tiny-random`
    ("host_step_repeats=1", "host_step_repeats 0 or >= 2"),
    ("repeats=1", "repeats >= 2"),
    ("verify_tokens=[]", "verify_tokens a non-empty list of integers >= 1"),
]
BATCH_SWEEP_ROWS = [  # overrides of `python -m experiments.batch_sweep model=tiny-random`
    ("batch_sizes=[]", "batch_sizes must be a non-empty list of integers >= 1 (got []): e.g. batch_sizes=[1,2,4,8]"),
    ("batch_sizes=4", "batch_sizes must be a non-empty list of integers >= 1 (got 4)"),
    ("batch_sizes=[1,0]", "batch_sizes must be a non-empty list of integers >= 1 (got [1, 0])"),
    ("batch_sizes=[-2]", "batch_sizes must be a non-empty list of integers >= 1"),
    ("batch_sizes=[2.5]", "batch_sizes must be a non-empty list of integers >= 1"),
    ("batch_sizes=[two]", "batch_sizes must be a non-empty list of integers >= 1"),
    ("batch_sizes=[true]", "batch_sizes must be a non-empty list of integers >= 1"),
    ("batch_sizes=null", "batch_sizes must be a non-empty list of integers >= 1 (got None)"),
    ("repeats=0", "repeats must be an integer >= 1 (got 0)"),
    ("anchors=[hf_generate,hf_assisted]", "anchor hf_assisted decodes one sequence at a time"),
    ("generation.batch_size=4", "sets the batch size from batch_sizes: drop generation.batch_size"),
    ("runtime.kv_cache=dynamic", "batch sizes above 1 need runtime.kv_cache=preallocated (per-row lengths)"),
    ("matrix=[]", "matrix must be a non-empty list of strategies"),
    ("generation.max_new_tokens=0", "generation.max_new_tokens must be an integer >= 1"),
]
ENTRY_POINTS = {  # config name -> the entry point's own path, which checks every setting before a model loads
    "config": run_experiment,
    "bench": lambda cfg, run_dir: run_experiment(cfg, run_dir, matrix_strategies(cfg.matrix)),
    "batch_sweep": batch_sweep,
    "cache_bench": cache_bench,
    "profile_step": lambda cfg, run_dir: profile_step(cfg),
}
PROMPT_FILES = [  # a prompt file's content, a fragment of the error
    ('{"prompt": 5}\n', 'line 1: "prompt" must be a non-empty string (got 5): quote it'),
    ('{"prompt": ""}\n', '"prompt" must be a non-empty string'),
    ('{"prompt": ["a"]}\n', '"prompt" must be a non-empty string (got ["a"])'),
    ('{"messages": "hi"}\n', '"messages" must be a non-empty list of {"role": str, "content": str} turns'),
    ('{"messages": []}\n', '"messages" must be a non-empty list'),
    ('{"messages": [{"role": "user"}]}\n', '"messages" must be a non-empty list'),
    ('{"messages": [{"role": "user", "content": 3}]}\n', '"messages" must be a non-empty list'),
    ('{"messages": ["hi"]}\n', '"messages" must be a non-empty list'),
    ('{"text": "no prompt here"}\n', 'line 1 has neither "prompt" nor "messages" (fields: text)'),
    ("{}\n", 'has neither "prompt" nor "messages" (fields: none)'),
    ('{"prompt": null}\n', 'has neither "prompt" nor "messages"'),
    ("[1, 2]\n", "line 1 is not a JSON object"),
    ('"just a string"\n', "line 1 is not a JSON object"),
    ("not json at all\n", "line 1 is not JSON"),
    ('{"prompt": "a"}\n{"prompt": "b"', "line 2 is not JSON"),  # a torn last line is the user's to fix
    ('{"prompt": "a"}\n\n{"prompt": "b"}\n{oops}\n', "line 4 is not JSON"),
    ("", "holds no prompts"),
    ("\n  \n\n", "holds no prompts"),
    ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "lines 1 and 2 have the same id 'x'"),
    ('{"prompt": "a"}\n{"prompt": "b", "id": "0"}\n', "lines 1 and 2 have the same id '0'"),
    ('{"prompt": "a", "id": 5}\n{"prompt": "b"}\n{"prompt": "c", "id": "5"}\n', "lines 1 and 3 have the same id '5'"),
    ('{"prompt": "a", "id": ""}\n', '"id" must be a non-empty string'),
    ('{"prompt": "a", "id": [1]}\n', '"id" must be a non-empty string (got [1])'),
    ('{"prompt": "a", "id": 1.5}\n', '"id" must be a non-empty string'),
    ('{"prompt": "a", "category": 3}\n', '"category" must be a string (got 3): quote it, as "category": "3"'),
    ('{"prompt": "a", "salt": 5}\n', '"salt" must be a string (got 5): quote it, as "salt": "5"'),
    ('{"prompt": "a", "salt": {"t": 1}}\n', '"salt" must be a string'),
    ('{"prompt": "a", "salt": true}\n', '"salt" must be a string (got true)'),
    (b'{"prompt": "caf\xe9"}\n', "cannot read"),  # Latin-1, not UTF-8
]


def entry_point_error(config: str, overrides: str, run_dir: Path) -> str:
    """The ConfigError of `python -m experiments.<config> model=tiny-random <overrides>`, raised in-process
    by the entry point's own path; asserts that it came before any file was written."""
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config, overrides=["model=tiny-random", *overrides.split()])
        with pytest.raises(ConfigError) as caught:
            ENTRY_POINTS[config](cfg, run_dir)
    assert not list(run_dir.iterdir()), "written before the settings were checked"
    return str(caught.value)


def one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message
    return message


TABLES = {"config": RUN_ROWS, "bench": BENCH_ROWS, "cache_bench": CACHE_BENCH_ROWS, "profile_step": PROFILE_STEP_ROWS,
          "batch_sweep": BATCH_SWEEP_ROWS}  # an entry point's config name -> its rows


@pytest.mark.parametrize("config,overrides,fragment", [(c, o, f) for c, rows in TABLES.items() for o, f in rows])
def test_bad_entry_point_settings(tmp_path, config, overrides, fragment):
    assert fragment in one_line(entry_point_error(config, overrides, tmp_path))


@pytest.mark.parametrize("content,fragment", PROMPT_FILES)
def test_bad_prompt_files(tmp_path, content, fragment):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as caught:
        load_prompts(str(path))
    assert fragment in one_line(str(caught.value)) and str(path) in str(caught.value)


def test_good_prompt_file_edge_cases(tmp_path):
    """Integer ids, blank lines, salts and messages with more keys load as given."""
    path = tmp_path / "prompts.jsonl"
    rows = ['{"prompt": "a", "id": 7, "salt": "alice"}', "",
            '{"messages": [{"role": "user", "content": "b", "name": "x"}]}', '{"prompt": "c", "category": "code"}']
    path.write_text("\n".join(rows) + "\n")
    prompts = load_prompts(str(path))
    assert [p["id"] for p in prompts] == ["7", "1", "2"] and prompts[0]["salt"] == "alice"
    assert prompts[2]["category"] == "code" and prompts[1]["messages"][0]["content"] == "b"
    assert [p["id"] for p in load_prompts(str(path), limit=2)] == ["7", "1"]


@pytest.mark.parametrize("config,fragment", [
    (GenerationConfig(stop_strings=[""]), "an empty string would stop every request at once"),
    (GenerationConfig(temperature=1e-45), "use generation.temperature=0 for greedy decoding"),
    (GenerationConfig(temperature="hot"), "generation.temperature must be a number >= 0"),
    (GenerationConfig(max_new_tokens=True), "generation.max_new_tokens must be an integer >= 1"),
    (GenerationConfig(stop_strings="\n"), "must be a list of non-empty strings"),
])
def test_bad_generation_settings_in_the_library(config, fragment):
    decoder = Decoder(tiny("llama"), create_strategy("baseline"), tokenizer=byte_tokenizer())
    with pytest.raises(ConfigError) as caught:
        decoder.generate([1, 2, 3], config)
    assert fragment in one_line(str(caught.value))


def cli(module: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, "model=tiny-random", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module,overrides,fragment", [
    ("experiments.run", ["generation.temperature=hot"], "generation.temperature must be a number >= 0"),
    ("experiments.run", ["hydra.run.dir={file}/run"], "cannot write the run directory"),
    ("experiments.bench", ["matrix=[]"], "matrix must be a non-empty list of strategies"),
    ("experiments.batch_sweep", ["batch_sizes=[0]"], "batch_sizes must be a non-empty list of integers >= 1"),
    ("experiments.run", ["draft=trained", "dataset.limit=1"], "was trained for another target (width 576"),
])
def test_the_cli_exits_with_status_2_and_one_line(tmp_path, module, overrides, fragment):
    (tmp_path / "file").write_text("")
    overrides = [o.format(file=tmp_path / "file") for o in overrides]
    if not any(o.startswith("hydra.run.dir") for o in overrides):
        overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
    result = cli(module, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if fragment in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists() and "results in" not in result.stdout
