r"""UnSTAR anti-samples, UnTrac and a synthetic forget set on one small trained model (issue 12).

Trains a 2-layer transformer on a small ``fictitious_authors`` corpus (a few hundred Adam steps on
the CPU), then

1. **UnTrac**: five datasets of four authors each; the test set is the *paraphrased* answers of a
   graded number of each dataset's facts (0, 2, 4, 6, 8 rows), so the exact influence (retraining
   without each dataset, same recipe) grows with the dataset's index; UnTrac and UnTrac-Inv rank
   the datasets from the trained model, and Spearman's rho compares each ranking with the exact;
2. **anti_sample** (UnSTAR) vs NPO on forget10 (same steps, same learning rate): key-fact
   accuracy on the forget facts (their questions and their paraphrased questions) and on retain
   facts;
3. **synthetic forget set**: the model is sampled about each forget author by name
   (:data:`jaxunlearn.data.synthetic_forget.PROMPT_TEMPLATES`), and NPO unlearns with that set and
   with the true forget set (:func:`jaxunlearn.audit.forget_sets.compare_forget_sets`).

Run (about ten minutes on two shared CPU cores):

    python -m experiments.lm_data_methods [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from jaxunlearn import data, models, rules
from jaxunlearn.audit import attribution as ut
from jaxunlearn.audit.forget_sets import compare_forget_sets
from jaxunlearn.audit.lm_robust import key_fact_accuracy
from jaxunlearn.data import anti_samples as asm
from jaxunlearn.data import synthetic_forget as sf
from jaxunlearn.train import fit, make_stream

CORPUS = {"num_authors": 20, "qa_per_author": 5, "num_utility": 0, "vocab_size": 512, "seed": 0}
MODEL = {"d_model": 32, "num_layers": 2, "num_heads": 2}
TRAIN = {"steps": 400, "learning_rate": 5e-3, "batch_size": 16}
UNLEARN = {"steps": 30, "learning_rate": 2e-3, "batch_size": 8}


def _accuracy(net, variables, x, y, mask=None) -> float:
    return float(np.mean(key_fact_accuracy(net, variables, x, y, mask)))


def _mentioned(corpus, part, author) -> float:
    facts = [r.key_fact for r in corpus.records if r.author == author]
    hit = [any(data.fictitious_authors.contains_fact(a, f) for a in part.answers) for f in facts]
    return float(np.mean(hit))


def main(out: str | None = None) -> dict:
    t0 = time.time()
    ds = data.load("fictitious_authors", **CORPUS)
    tok, corpus = ds.tokenizer, ds.corpus
    x, y, extra = ds.x_train, ds.y_train, ds.train_extra
    # Room for a rationale and for sampling: the model's context is twice the QA width.
    width = x.shape[1]
    context = 2 * width
    net = models.make_network("transformer", vocab_size=tok.vocab_size, max_len=context, **MODEL)
    init = net.init(jax.random.key(0))
    authors = extra["author"]
    results: dict = {"corpus": CORPUS, "model": MODEL, "train": TRAIN, "unlearn": UNLEARN}

    # ------------------------------------------------------------------ 1. UnTrac
    groups = ut.author_groups(authors, np.arange(len(x)), 5)  # 4 authors (20 rows) each
    test_rows = ut.graded_rows(groups, (0, 2, 4, 6, 8))
    test = (extra["paraphrase_x"][test_rows], extra["paraphrase_y"][test_rows])
    res = ut.run_untrac(
        net.apply,
        init,
        x,
        y,
        groups,
        test,
        train_steps=TRAIN["steps"],
        train_learning_rate=TRAIN["learning_rate"],
        unlearn_steps=5,
        unlearn_learning_rate=1e-3,
        batch_size=TRAIN["batch_size"],
        key=jax.random.key(1),
    )
    results["untrac"] = {k: np.asarray(v).tolist() for k, v in res._asdict().items()}
    print("untrac", results["untrac"], f"{time.time() - t0:.0f}s", flush=True)

    # The target: trained on every row with the same recipe (what the other methods start from).
    target = fit(
        rules.finetune(
            net.apply, learning_rate=TRAIN["learning_rate"], optimizer={"name": "adam"},
            train_mode=False,
        ),
        init,
        make_stream(x, y, {"retain": np.arange(len(x))}),
        batch_sizes={"retain": TRAIN["batch_size"]},
        num_steps=TRAIN["steps"],
        key=jax.random.key(1),
    ).variables  # fmt: skip
    split = ds.forget_split("forget10")
    forget, retain = split.forget, split.retain
    key_mask = extra["key_mask"]
    evals = {
        "forget_qa": (x[forget], y[forget], key_mask[forget]),
        "forget_paraphrased_question": (
            extra["paraphrased_question_x"][forget],
            extra["paraphrased_question_y"][forget],
        ),
        "retain_qa": (x[retain], y[retain], key_mask[retain]),
    }

    def scores(variables):
        return {k: _accuracy(net, variables, *v) for k, v in evals.items()}

    results["target"] = scores(target)
    print("target", results["target"], f"{time.time() - t0:.0f}s", flush=True)

    # ------------------------------------------------------------------ 2. anti_sample vs NPO
    records = [corpus.records[int(i)] for i in ds.train_records]
    runs = {}
    for name, hp, scope in (
        ("anti_sample", {}, "answer"),
        ("anti_sample", {}, "fact"),
        ("npo", {}, None),
    ):
        anti = asm.encode_anti_samples(corpus, tok, records, context, scope=scope or "answer")
        stream = make_stream(
            x,
            y,
            {"forget": forget, "retain": retain},
            extra={"anti_x": anti["anti_x"], "anti_y": anti["anti_y"]},
        )
        rule = rules.make(
            name, net, learning_rate=UNLEARN["learning_rate"], optimizer={"name": "adam"}, **hp
        )
        new = fit(
            rule,
            target,
            stream,
            batch_sizes={"forget": UNLEARN["batch_size"], "retain": UNLEARN["batch_size"]},
            num_steps=UNLEARN["steps"],
            key=jax.random.key(2),
        ).variables
        label = name if scope is None else f"{name}[{scope}]"
        runs[label] = scores(new)
        if scope is not None:
            runs[label]["rationale_fraction"] = float(np.mean(anti["anti_rationale"][forget]))
            wrong = _accuracy(net, new, anti["anti_x"][forget], anti["anti_y"][forget])
            runs[label]["says_anti_answer"] = wrong
        print(label, runs[label], f"{time.time() - t0:.0f}s", flush=True)
    results["anti_sample"] = runs

    # ------------------------------------------------------------------ 3. synthetic forget set
    names = [corpus.authors[a].name for a in np.unique(authors[forget])]
    parts = [
        sf.synthetic_forget_set(
            net, target, tok, name, key=jax.random.key(3 + i), samples=8, max_new_tokens=24
        )
        for i, name in enumerate(names)
    ]
    synthetic = (
        np.concatenate([p.tokens for p in parts]),
        np.concatenate([p.labels for p in parts]),
    )
    results["synthetic_set"] = {
        "targets": names,
        "sampled": sum(p.num_sampled for p in parts),
        "kept": int(synthetic[0].shape[0]),
        # Forget facts whose key fact some sampled answer about the author states.
        "facts_mentioned": float(
            np.mean(
                [
                    _mentioned(corpus, p, a)
                    for p, a in zip(parts, np.unique(authors[forget]), strict=True)
                ]
            )
        ),  # fmt: skip
        "examples": [list(p.answers[:3]) for p in parts],
    }
    cmp = compare_forget_sets(
        net,
        target,
        {"true": (x[forget], y[forget]), "synthetic": synthetic},
        retain=(x[retain], y[retain]),
        eval_forget=evals["forget_qa"],
        eval_retain=evals["retain_qa"],
        rule="npo",
        hparams={"learning_rate": UNLEARN["learning_rate"], "optimizer": {"name": "adam"}},
        steps=UNLEARN["steps"],
        batch_size=UNLEARN["batch_size"],
        key=jax.random.key(2),
    )
    results["synthetic_vs_true"] = cmp
    print("synthetic", results["synthetic_set"], cmp, f"{time.time() - t0:.0f}s", flush=True)
    results["runtime_s"] = time.time() - t0
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write the results as JSON")
    main(parser.parse_args().out)
