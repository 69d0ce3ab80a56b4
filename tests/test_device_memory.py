"""Device memory management (graph.memory) on a simulated GPU: a device of a fixed capacity that
raises out-of-memory as CUDA does, models that must be on it to run, and a budget. No torch."""
import weakref
from collections import Counter

import pytest

from graph import Cache, Env, In, Int, Loom, Node, Out, Registry, String
from graph.memory import DeviceMemory

DEVICE, HOST = "sim:0", "cpu"


class SimOutOfMemory(RuntimeError):
    pass


class SimStorage:
    def __init__(self, nbytes: int):
        self.n = nbytes

    def data_ptr(self) -> int:
        return id(self)

    def nbytes(self) -> int:
        return self.n


class SimTensor:
    """What the cache counts of a tensor: its device and its storage's address and size."""

    def __init__(self, gpu: "SimGPU", nbytes: int, device: str):
        self.gpu, self.nbytes, self.device = gpu, nbytes, device
        self._storage = SimStorage(nbytes)

    def untyped_storage(self) -> SimStorage:
        return self._storage

    def move(self, device: str) -> None:
        if device == DEVICE:
            self.gpu.reserve(self.nbytes)
        self.device, self._storage = device, SimStorage(self.nbytes)  # a copy elsewhere, a new address


class SimGPU:
    """A device of `capacity` bytes: going past it raises SimOutOfMemory."""

    def __init__(self, capacity: int):
        self.capacity, self.peak = capacity, 0
        self.live: weakref.WeakSet = weakref.WeakSet()

    @property
    def used(self) -> int:
        return sum(t.nbytes for t in self.live if t.device == DEVICE)

    def reserve(self, nbytes: int) -> None:
        if self.used + nbytes > self.capacity:
            raise SimOutOfMemory(f"sim:0 is out of memory: {self.used} + {nbytes} > {self.capacity} bytes")
        self.peak = max(self.peak, self.used + nbytes)

    def tensor(self, nbytes: int, device: str = DEVICE) -> SimTensor:
        if device == DEVICE:
            self.reserve(nbytes)
        t = SimTensor(self, nbytes, device)
        self.live.add(t)
        return t


class SimModel:
    """A module as the cache sees one: parameters and buffers."""

    def __init__(self, gpu: SimGPU, name: str, nbytes: int, device: str = DEVICE):
        self.name, self.weight = name, gpu.tensor(nbytes, device)

    def parameters(self):
        return [self.weight]

    def buffers(self):
        return []

    @property
    def device(self) -> str:
        return self.weight.device


class SimView:
    """A model seen through another object that shares its tensors, as nodes.lora's LoraView."""

    def __init__(self, base: SimModel):
        self.base, self.name = base, f"{base.name}+view"

    def parameters(self):
        return self.base.parameters()

    def buffers(self):
        return []

    @property
    def device(self) -> str:
        return self.base.device


class SimPlacement:
    device, host = DEVICE, HOST

    def __init__(self, gpu: SimGPU):
        self.gpu = gpu

    def move(self, model, device: str) -> None:
        for t in model.parameters():
            t.move(device)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, SimOutOfMemory)

    def default_budget(self) -> int:
        return self.gpu.capacity - 10


# --- nodes that load and use models on the simulated GPU ---------------------------------------
LOADS: Counter = Counter()
MODELS: dict[str, SimModel] = {}


class LoadSim(Node):
    category = "loaders"
    model_name = String("a", model_kind="sim")
    size = Int(60, min=1, max=10**6)
    outputs = (Out("SIM_MODEL", "model"),)

    def run(self, ctx):
        LOADS[self.model_name] += 1
        MODELS[self.model_name] = SimModel(ctx.env.extras["gpu"], self.model_name, self.size)
        return MODELS[self.model_name]


class ViewSim(Node):
    category = "sim"
    model = In("SIM_MODEL")
    outputs = (Out("SIM_MODEL", "model"),)

    def run(self, ctx):
        return SimView(self.model)


class UseSim(Node):
    """Like a UNet step: the model's weights must be on the device; makes a tensor there."""
    category = "sim"
    model = In("SIM_MODEL")
    seed = Int(0, min=0, max=1000)
    size = Int(5, min=1, max=10**6)
    outputs = (Out("SIM_TENSOR", "x"),)

    def run(self, ctx):
        if self.model.device != DEVICE:
            raise RuntimeError(f"model {self.model.name} is on {self.model.device}, not on the device")
        x = ctx.env.extras["gpu"].tensor(self.size)
        x.label = f"{self.model.name}:{self.seed}"
        return x


class ShowSim(Node):
    category = "sim"
    output_node = True
    x = In("SIM_TENSOR")
    y = In("SIM_TENSOR", optional=True)
    outputs = ()

    def run(self, ctx):
        ctx.show(text=[self.x.label + (f"+{self.y.label}" if self.y is not None else "")])


def one_model(name: str, seed: int = 0, size: int = 60) -> dict:
    return {"1": {"class_type": "LoadSim", "inputs": {"model_name": name, "size": size}},
            "2": {"class_type": "UseSim", "inputs": {"model": ["1", 0], "seed": seed}},
            "3": {"class_type": "ShowSim", "inputs": {"x": ["2", 0]}}}


def viewed(name: str, seed: int = 0) -> dict:
    prompt = one_model(name, seed)
    prompt["4"] = {"class_type": "ViewSim", "inputs": {"model": ["1", 0]}}
    prompt["2"]["inputs"]["model"] = ["4", 0]
    return prompt


def two_models(a: str, b: str, size: int = 60) -> dict:
    return {"1": {"class_type": "LoadSim", "inputs": {"model_name": a, "size": size}},
            "2": {"class_type": "LoadSim", "inputs": {"model_name": b, "size": size}},
            "3": {"class_type": "UseSim", "inputs": {"model": ["1", 0]}},
            "4": {"class_type": "UseSim", "inputs": {"model": ["2", 0]}},
            "5": {"class_type": "ShowSim", "inputs": {"x": ["3", 0], "y": ["4", 0]}}}


@pytest.fixture(autouse=True)
def fresh():
    LOADS.clear()
    MODELS.clear()


def sim_loom(tmp_path, capacity: int, budget: int | None, cache_bytes: int | None = None, managed: bool = True):
    gpu = SimGPU(capacity)
    env = Env.from_data_dir(tmp_path, extras={"gpu": gpu})
    loom = Loom(env, registry=Registry([LoadSim, ViewSim, UseSim, ShowSim]), cache_bytes=cache_bytes,
                placement=SimPlacement(gpu) if managed else None, vram_bytes=budget)
    return loom, gpu


def shown(result) -> str:
    assert result.ok, result.error
    return next(ui["text"][0] for ui in result.outputs.values())


# --- the policy through the executor -----------------------------------------------------------

def test_lru_model_moves_to_host_instead_of_failing_and_moves_back(tmp_path):
    loom, gpu = sim_loom(tmp_path, capacity=1000, budget=100)
    memory = loom.executor.memory
    assert shown(loom.run(one_model("a", seed=1))) == "a:1"
    assert shown(loom.run(one_model("b", seed=1))) == "b:1"  # 60 + 60 > 100: "a" must leave
    assert MODELS["a"].device == HOST and MODELS["b"].device == DEVICE
    assert memory.bytes <= 100 and gpu.used <= 100
    assert memory.offloads == 1 and memory.reloads == 0

    result = loom.run(one_model("a", seed=2))  # "a" is still cached: moved back, not loaded again
    assert shown(result) == "a:2" and "1" in result.cached
    assert LOADS == {"a": 1, "b": 1}
    assert MODELS["a"].device == DEVICE and MODELS["b"].device == HOST
    assert memory.offloads == 2 and memory.reloads == 1
    assert memory.bytes == gpu.used <= 100  # what the cache counts is what the device holds
    assert loom.executor.cache.device_bytes[HOST] == 60  # "b" waits in the host's RAM


def test_out_of_memory_clears_the_device_and_runs_the_node_again(tmp_path):
    """A budget larger than the device (as free memory minus a margin can be once activations
    grow): loading "b" next to "a" runs out of memory; "a" leaves and "b" loads."""
    loom, gpu = sim_loom(tmp_path, capacity=100, budget=1000)
    assert shown(loom.run(one_model("a"))) == "a:0"
    assert shown(loom.run(one_model("b"))) == "b:0"
    assert loom.executor.memory.retries == 1
    assert LOADS == {"a": 1, "b": 2}  # the attempt that ran out of memory, and the one that loaded
    assert MODELS["a"].device == HOST and MODELS["b"].device == DEVICE
    # Moving "a" back next to "b" runs out of memory the same way: "b" leaves, "a" comes back.
    assert shown(loom.run(one_model("a", seed=3))) == "a:3"
    assert loom.executor.memory.retries == 2 and LOADS == {"a": 1, "b": 2}
    assert MODELS["a"].device == DEVICE and MODELS["b"].device == HOST


def test_a_view_and_its_base_come_back_together(tmp_path):
    """A view shares its base's tensors: moving either moves both, the cache counts them once, and
    whichever a node takes, the weights come back."""
    loom, gpu = sim_loom(tmp_path, capacity=1000, budget=100)
    memory = loom.executor.memory
    steps = [(viewed("a", 1), "a+view:1"), (one_model("b"), "b:0"), (one_model("a", 2), "a:2"),
             (one_model("b", 3), "b:3"), (viewed("a", 4), "a+view:4")]
    for prompt, text in steps:
        assert shown(loom.run(prompt)) == text
        assert memory.bytes == gpu.used <= 100
    assert LOADS == {"a": 1, "b": 1} and MODELS["a"].device == DEVICE and MODELS["b"].device == HOST


def test_a_loader_gets_room_before_it_runs(tmp_path):
    """With the budget at the device's size, room for a model as large as the largest seen is made
    before a loader runs: no out-of-memory, and the device never holds more than the budget."""
    loom, gpu = sim_loom(tmp_path, capacity=100, budget=100)
    for name in "aba":
        assert loom.run(one_model(name, seed=LOADS[name])).ok
    assert loom.executor.memory.retries == 0 and LOADS == {"a": 1, "b": 1}
    assert gpu.peak <= 100 and loom.executor.memory.reloads == 1


def test_without_the_manager_the_same_runs_fail(tmp_path):
    loom, _ = sim_loom(tmp_path, capacity=100, budget=None, managed=False)
    assert loom.run(one_model("a")).ok
    result = loom.run(one_model("b"))
    assert result.status == "error" and result.error["exception_type"] == "SimOutOfMemory"


def test_a_prompt_needing_more_than_the_budget_still_runs(tmp_path):
    """Both models are pinned by the prompt; the one the next node does not take leaves for a while."""
    loom, gpu = sim_loom(tmp_path, capacity=1000, budget=100)
    assert shown(loom.run(two_models("a", "b"))) == "a:0+b:0"
    assert loom.executor.memory.offloads >= 1 and loom.executor.memory.bytes <= 100
    assert LOADS == {"a": 1, "b": 1}


def test_the_host_budget_drops_moved_models_last(tmp_path):
    """Three levels: device, host RAM (the cache budget), gone. With room for one model in each,
    the oldest of three is loaded again."""
    loom, _ = sim_loom(tmp_path, capacity=1000, budget=100, cache_bytes=70)
    for name in "abc":
        assert loom.run(one_model(name)).ok
    assert MODELS["c"].device == DEVICE and MODELS["b"].device == HOST
    assert loom.executor.cache.host_bytes <= 70
    assert loom.run(one_model("b", seed=1)).ok and LOADS["b"] == 1  # from RAM
    assert loom.run(one_model("a", seed=1)).ok and LOADS["a"] == 2  # from disk


# --- the policy itself --------------------------------------------------------------------------

def memory_on(budget: int) -> tuple[Cache, DeviceMemory, SimGPU]:
    gpu = SimGPU(10**6)
    cache = Cache(budget_bytes=10**6)
    return cache, DeviceMemory(cache, SimPlacement(gpu), budget), gpu


def add(cache, memory, key, value, pinned=frozenset()):
    cache.put(key, (value,), pinned=pinned)
    memory.after((value,), (), set(pinned) | {key})


def test_cached_tensors_leave_before_models():
    cache, memory, gpu = memory_on(100)
    a = SimModel(gpu, "a", 60)
    add(cache, memory, "a", a)
    add(cache, memory, "t1", gpu.tensor(15))
    add(cache, memory, "t2", gpu.tensor(15))
    assert memory.bytes == 90
    add(cache, memory, "b", SimModel(gpu, "b", 30))  # 120: both tensors go, "a" stays
    assert "t1" not in cache and "t2" not in cache
    assert a.device == DEVICE and memory.evictions == 2 and memory.offloads == 0
    add(cache, memory, "c", SimModel(gpu, "c", 30))  # 120 again: no tensor left, "a" (LRU) moves
    assert a.device == HOST and memory.offloads == 1 and memory.bytes == 60
    assert "a" in cache  # moved, not dropped


def test_models_the_prompt_needs_stay_longer_than_recent_ones_it_does_not():
    cache, memory, gpu = memory_on(100)
    needed, recent = SimModel(gpu, "needed", 40), SimModel(gpu, "recent", 40)
    add(cache, memory, "needed", needed)
    add(cache, memory, "recent", recent)
    add(cache, memory, "new", SimModel(gpu, "new", 40), pinned={"needed"})
    assert needed.device == DEVICE and recent.device == HOST


def test_before_a_node_its_models_come_back_and_others_make_room():
    cache, memory, gpu = memory_on(100)
    a, b = SimModel(gpu, "a", 60), SimModel(gpu, "b", 60)
    add(cache, memory, "a", a)
    add(cache, memory, "b", b)
    assert a.device == HOST
    memory.before([{"model": a}], pinned={"a"})  # found inside the node's input values
    assert a.device == DEVICE and b.device == HOST and memory.reloads == 1
    assert cache.device_bytes == {DEVICE: 60, HOST: 60}


def test_cache_counts_bytes_per_device_and_its_budget_skips_managed_ones():
    gpu = SimGPU(10**6)
    cache = Cache(budget_bytes=50)
    cache.managed.add(DEVICE)
    model = SimModel(gpu, "m", 80)
    cache.put("m", (model, {"same": model.weight}))  # one storage, counted once
    cache.put("h", (gpu.tensor(40, HOST),))
    assert cache.device_bytes == {DEVICE: 80, HOST: 40} and cache.host_bytes == 40
    cache.put("h2", (gpu.tensor(40, HOST),))  # host over 50: "h" goes, "m" frees no host bytes
    assert cache.keys() == ["m", "h2"]
    model.weight.move(HOST)
    cache.restat(["m"])
    assert cache.device_bytes == {DEVICE: 0, HOST: 120} and cache.bytes == 120
    assert cache.stats()["devices"] == {HOST: 120}
