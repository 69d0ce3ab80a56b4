"""The routing policy of the Ray workers (loomqueue.routing) and its routing pass over the store.
No Ray, no torch."""
import random

from graph import Combo, In, Node, Out, Registry, String
from loomqueue.routing import Idle, Pending, Policy, Router, assign, model_keys
from loomqueue.store import Store


class LoadThing(Node):
    category = "loaders"
    model = Combo(["a", "b", "c"], model_kind="checkpoints")
    outputs = (Out("UNET", "unet"),)


class UseThing(Node):
    category = "sampling"
    unet = In("UNET")
    text = String("x")
    outputs = (Out("LATENT", "latents"),)


def P(id_, *models, skipped=0):
    return Pending(id_, frozenset(models), skipped)


def W(name, *models, last_used=0.0):
    return Idle(name, frozenset(models), last_used)


def names(pairs):
    return [(w.name, p.id) for w, p in pairs]


def test_model_keys_name_the_loader_configurations_only():
    registry = Registry([LoadThing, UseThing])
    prompt = {"1": {"class_type": "LoadThing", "inputs": {"model": "a"}},
              "2": {"class_type": "LoadThing", "inputs": {"model": "b"}},
              "3": {"class_type": "LoadThing", "inputs": {"model": "a"}},
              "4": {"class_type": "UseThing", "inputs": {"unet": ["1", 0], "text": "model=c"}}}
    assert model_keys(prompt, registry) == {"LoadThing(model=a)", "LoadThing(model=b)"}
    assert model_keys({"1": {"class_type": "UseThing", "inputs": {}}}, registry) == frozenset()


def test_a_worker_takes_the_earliest_prompt_whose_models_it_holds():
    pending = [P("1", "m1"), P("2", "m2"), P("3", "m2"), P("4", "m1")]
    assert names(assign(pending, [W("w", "m2")])) == [("w", "2")]
    assert pending[0].skipped == 1 and pending[2].skipped == 0  # only what it overtook counts


def test_most_overlap_when_nothing_is_held_entirely():
    pending = [P("1", "m3"), P("2", "m1", "m4"), P("3", "m1", "m2", "m5"), P("4", "m9")]
    assert names(assign(pending, [W("w", "m1", "m2")])) == [("w", "3")]


def test_what_nobody_holds_goes_to_the_least_recently_used_worker():
    pending = [P("1", "m3")]
    idle = [W("recent", "m1", last_used=10.0), W("old", "m2", last_used=1.0)]
    assert names(assign(pending, idle)) == [("old", "1")]


def test_several_idle_workers_each_get_their_own_model():
    pending = [P("1", "m1"), P("2", "m1"), P("3", "m2"), P("4", "m3")]
    idle = [W("a", "m2", last_used=1.0), W("b", "m1", last_used=2.0), W("c", last_used=0.0)]
    assert sorted(names(assign(pending, idle))) == [("a", "3"), ("b", "1"), ("c", "2")]


def test_the_window_bounds_how_far_a_worker_looks():
    pending = [P(str(i), "m1") for i in range(10)] + [P("far", "m2")]
    assert names(assign(pending, [W("w", "m2")], Policy(window=4))) == [("w", "0")]


def test_a_prompt_overtaken_max_skips_times_goes_next():
    pending = [P("cold", "m9")] + [P(f"hot{i}", "m1") for i in range(20)]
    started = []
    for _ in range(20):
        pairs = assign(pending, [W("w", "m1")], Policy(max_skips=3))
        assert len(pairs) == 1
        started.append(pairs[0][1].id)
        pending.remove(pairs[0][1])
    assert started[:4] == ["hot0", "hot1", "hot2", "cold"]


def test_without_affinity_the_queue_order_is_kept():
    pending = [P("1", "m1"), P("2", "m2"), P("3", "m1")]
    idle = [W("b", "m1", last_used=2.0), W("a", "m2", last_used=1.0)]
    assert names(assign(pending, idle, Policy(affinity=False))) == [("a", "1"), ("b", "2")]


def test_nothing_starves_under_random_load():
    """Random queues of prompts over 4 models, 3 workers holding one model each: every prompt starts,
    none is overtaken more than max_skips times plus the number of workers."""
    rng = random.Random(7)
    policy = Policy(window=6, max_skips=3)
    workers = [W(f"w{i}", f"m{i}") for i in range(3)]
    pending = [P(str(i), f"m{rng.randrange(4)}") for i in range(200)]
    started, clock = [], 0.0
    while pending:
        idle = rng.sample(workers, rng.randint(1, 3))
        for worker, prompt in assign(pending, idle, policy):
            clock += 1
            worker.models, worker.last_used = prompt.models, clock  # it loads what the prompt needs
            pending.remove(prompt)
            started.append(prompt)
        assert all(p.skipped <= policy.max_skips + len(workers) for p in pending)
    assert sorted(int(p.id) for p in started) == list(range(200))


def test_affinity_loads_fewer_models_than_fifo():
    """The point of the policy, measured on the policy alone: 40 prompts over 3 models, 2 workers
    that each hold one model at a time."""
    def loads(affinity):
        rng = random.Random(1)
        pending = [P(str(i), f"m{rng.randrange(3)}") for i in range(40)]
        workers, count, clock = [W("a"), W("b")], 0, 0.0
        while pending:
            for worker, prompt in assign(pending, [workers[int(clock) % 2]], Policy(affinity=affinity)):
                count += not prompt.models <= worker.models
                clock += 1
                worker.models, worker.last_used = prompt.models, clock
                pending.remove(prompt)
        return count
    assert loads(True) * 2 < loads(False)


def queue_of(store, *rows):
    """Pending prompts with the given models: rows of (id, [model, ...])."""
    for prompt_id, models in rows:
        store.add(prompt_id, {}, {"1": {"class_type": "UseThing", "inputs": {}}}, {}, [], models=models)


def test_a_routing_pass_reads_the_head_and_claims_what_it_assigns(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    queue_of(store, ("1", ["m1"]), ("2", ["m2"]), ("3", ["m2"]))
    router = Router(store, Registry([LoadThing, UseThing]))
    [(worker, item)] = router.route([W("w", "m2")])
    assert (worker.name, item.id, item.state, item.attempts) == ("w", "2", "running", 1)
    assert [h.id for h in store.head(10)] == ["1", "3"]
    assert {h.id: h.skipped for h in store.head(10)} == {"1": 1, "3": 0}  # kept in the store
    store.close()


def test_skip_counts_survive_a_restart_so_nothing_starves(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    queue_of(store, ("cold", ["m9"]), *[(f"hot{i}", ["m1"]) for i in range(6)])
    policy = Policy(max_skips=3)
    started = []
    for _ in range(4):
        store.close()  # a restart between passes: the router keeps nothing in memory
        store = Store(tmp_path / "q.sqlite3")
        [(_, item)] = Router(store, Registry([LoadThing]), policy).route([W("w", "m1")])
        store.finish(item.id, {"status": {}, "outputs": {}, "meta": {}})
        started.append(item.id)
    assert started == ["hot0", "hot1", "hot2", "cold"]
    store.close()


def test_prompts_queued_before_models_were_recorded_get_them_once(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    store.add("old", {}, {"1": {"class_type": "LoadThing", "inputs": {"model": "b"}}}, {}, [])  # models unknown
    queue_of(store, ("new", ["LoadThing(model=a)"]))
    assert store.head(5)[0].models is None
    router = Router(store, Registry([LoadThing, UseThing]))
    [(_, item)] = router.route([W("w", "LoadThing(model=b)")])
    assert item.id == "old"
    store.requeue("old")
    assert store.head(5)[0].models == {"LoadThing(model=b)"}
    store.close()
