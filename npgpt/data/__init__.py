"""Data: the built-in corpus, text files, GPT batches, and seq2seq tasks for the Transformer.

One subject per file:

    text.py      default_corpus, load_text                      the text a language model reads
    lm.py        split, get_batch                               GPT's train/val split and batches
    seq2seq.py   Seq2SeqVocab, load_pairs_tsv, Batch,           the encoder-decoder's vocabulary,
                 pad_batch, iterate_batches                     parallel text and padded batches
    tasks.py     make_task, TASKS, DIGITS                       built-in synthetic seq2seq tasks
    checks.py    check_int, check_rng                           argument checks they share

Language modelling (GPT), as nanoGPT does it:

    text = default_corpus()                         # or load_text("input.txt")
    ids = np.array(tokenizer.encode(text))
    train, val = split(ids, val_fraction=0.1)       # first 90% / last 10%
    x, y = get_batch(train, batch_size=8, block_size=64, rng=np.random.default_rng(0))

Sequence to sequence (encoder-decoder Transformer):

    vocab, train_pairs, test_pairs = make_task("reverse", n_train=5000, n_test=500, seed=0)
    for batch in iterate_batches(train_pairs, vocab, batch_size=64, max_len=32, rng=rng):
        logits, loss = model.forward(batch.src, batch.tgt_in, batch.tgt_out,
                                     batch.src_pad, batch.tgt_pad)
"""

from .lm import get_batch, split
from .seq2seq import Batch, Seq2SeqVocab, iterate_batches, load_pairs_tsv, pad_batch
from .tasks import DIGITS, TASKS, make_task
from .text import default_corpus, load_text

__all__ = ["default_corpus", "load_text", "split", "get_batch", "Seq2SeqVocab", "load_pairs_tsv",
           "Batch", "pad_batch", "iterate_batches", "make_task", "TASKS", "DIGITS"]
