"""Text-aware recommenders reading one document per item (``item_text``): Cornac's CTR
(Wang & Blei, KDD 2011) and HFT (McAuley & Leskovec, RecSys 2013).

Both are fitted on exactly our index spaces: a Cornac ``Dataset`` whose user/item maps are
the identity on :class:`~rekalm.recommenders.interactions.Interactions`' row/column indices
(``Dataset.build`` would drop the items nobody liked in training), and a ``TextModality``
holding the document of every item index. An item no training user liked is still scored:
CTR's item vector is then its topic proportions (the item update shrinks V towards theta),
and HFT ties an item's factors to its topic distribution.

Documents are bags of words: Cornac's ``BaseTokenizer`` (lower-cased, split on non-word
characters, English stop words out), the ``max_vocab`` most frequent words, words in more
than half of the documents out (they carry no topic).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rekalm.recommenders.global_seed import numpy_global_seed
from rekalm.recommenders.interactions import Interactions, PairScorer, rows_scorer
from rekalm.recommenders.registry import register_baseline

log = logging.getLogger(__name__)

MAX_DOC_FREQ = 0.5  # words in more than this share of the documents are left out


def documents_of(data: Interactions, baseline: str) -> list[str]:
    documents = data.knowledge.item_text
    if documents is None or len(documents) != len(data.items):
        got = "none" if documents is None else f"{len(documents)} documents"
        raise ValueError(f"{baseline}: expected one item_text document per item ({len(data.items)}), got {got}")
    if not any(document.strip() for document in documents):
        raise ValueError(f"{baseline}: every item_text document is empty; nothing to learn topics from")
    return documents


def cornac_train_set(
    data: Interactions, documents: list[str], max_vocab: int, extra: tuple[np.ndarray, np.ndarray] | None = None
) -> Any:
    """A Cornac Dataset on our user/item indices with the documents as its item text.

    ``extra``: (user indices, item indices) of sampled unobserved pairs, entered as rating 0
    (HFT, a rating model, needs them: see :func:`fit_hft`)."""
    from cornac.data import Dataset, TextModality
    from cornac.data.text import BaseTokenizer

    positives = data.matrix.tocoo()
    users, items = positives.row.astype(np.int64), positives.col.astype(np.int64)
    ratings = np.ones(len(users), dtype=np.float64)
    if extra is not None:
        users = np.concatenate([users, extra[0]])
        items = np.concatenate([items, extra[1]])
        ratings = np.concatenate([ratings, np.zeros(len(extra[0]))])
    n_users, n_items = data.matrix.shape
    train_set = Dataset(
        num_users=n_users,
        num_items=n_items,
        uid_map={index: index for index in range(n_users)},
        iid_map={index: index for index in range(n_items)},
        uir_tuple=(users, items, ratings),
    )
    text = TextModality(
        corpus=list(documents),
        ids=list(range(n_items)),
        tokenizer=BaseTokenizer(stop_words="english"),
        max_vocab=int(max_vocab),
        max_doc_freq=MAX_DOC_FREQ,
    )
    text.build(id_map=train_set.iid_map)
    train_set.add_modalities(item_text=text)
    log.info("cornac: %d users, %d items, %d ratings, vocabulary %d", n_users, n_items, len(ratings), text.vocab.size)
    return train_set


@register_baseline("ctr", seeded=True, reads=("item_text",))
def fit_ctr(
    data: Interactions,
    seed: int,
    threads: int,
    k: int = 20,
    lambda_u: float = 0.01,
    lambda_v: float = 10.0,
    a: float = 1.0,
    b: float = 0.01,
    max_iter: int = 20,
    max_vocab: int = 5000,
) -> PairScorer:
    """Collaborative Topic Regression: item factors = LDA topic proportions of the item's
    document + an offset learned from the likes (weighted matrix factorisation, confidence
    ``a`` on likes, ``b`` on the rest); score = user factors . item factors. ``lambda_v``
    pulls the item factors towards the topics (large: text dominates)."""
    from cornac.models import CTR

    train_set = cornac_train_set(data, documents_of(data, "ctr"), max_vocab)
    model = CTR(
        k=int(k),
        lambda_u=float(lambda_u),
        lambda_v=float(lambda_v),
        a=float(a),
        b=float(b),
        max_iter=int(max_iter),
        seed=int(seed),
        verbose=False,
    )
    model.fit(train_set)
    user_factors, item_factors = np.asarray(model.U), np.asarray(model.V)
    return rows_scorer(lambda users: user_factors[users] @ item_factors.T)


@register_baseline("hft", seeded=True, reads=("item_text",))
def fit_hft(
    data: Interactions,
    seed: int,
    threads: int,
    k: int = 10,
    lambda_text: float = 0.1,
    l2_reg: float = 0.001,
    max_iter: int = 10,
    grad_iter: int = 5,
    negatives: int = 3,
    max_vocab: int = 5000,
) -> PairScorer:
    """Hidden Factors and hidden Topics: a biased matrix factorisation whose item factors
    are tied to the topic distribution of the item's document (weight ``lambda_text``);
    score = alpha + user bias + item bias + user factors . item factors.

    HFT fits observed ratings. With positive-only feedback every observed rating is 1 and the
    fit learns nothing that orders items, so ``negatives`` unobserved items per like are
    sampled (seeded, uniformly among the user's unliked items) and entered as rating 0."""
    from cornac.models import HFT

    documents = documents_of(data, "hft")
    extra = sample_unobserved(data, int(negatives), seed)
    train_set = cornac_train_set(data, documents, max_vocab, extra=extra)
    model = HFT(
        k=int(k),
        max_iter=int(max_iter),
        grad_iter=int(grad_iter),
        lambda_text=float(lambda_text),
        l2_reg=float(l2_reg),
        vocab_size=train_set.item_text.vocab.size,
        seed=int(seed),
        verbose=False,
    )
    with numpy_global_seed(seed):
        model.fit(train_set)
    alpha, item_bias = float(model.alpha), np.asarray(model.beta_i)
    user_factors, item_factors = np.asarray(model.gamma_u), np.asarray(model.gamma_i)
    # The user bias shifts every item of a user alike: it does not change a user's order.
    return rows_scorer(lambda users: alpha + item_bias[None, :] + user_factors[users] @ item_factors.T)


def sample_unobserved(data: Interactions, per_like: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``per_like`` items per like of each user, drawn uniformly (seeded) among the
    items the user did not like, repeats dropped; none for a user who liked every item."""
    rng = np.random.default_rng(seed)
    n_items = data.matrix.shape[1]
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    for user in range(data.matrix.shape[0]):
        liked = data.matrix.indices[data.matrix.indptr[user] : data.matrix.indptr[user + 1]]
        if per_like <= 0 or len(liked) == 0 or len(liked) >= n_items:
            continue
        pool = np.setdiff1d(np.arange(n_items), liked, assume_unique=False)
        picked = np.unique(rng.choice(pool, size=min(len(pool), per_like * len(liked)), replace=True))
        users.append(np.full(len(picked), user, dtype=np.int64))
        items.append(picked.astype(np.int64))
    if not users:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(users), np.concatenate(items)
