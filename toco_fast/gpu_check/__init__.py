"""One command that checks a GPU install end to end: ``make gpu-check`` / ``python -m toco_fast.gpu_check``.

For a GPU machine with torch, triton, timm, nvcc and ninja preinstalled, no network and no virtualenv. Five
phases, every step a subprocess under its own time budget (8 minutes in all on one H100/H200):

1. environment (versions, GPU, clocks), pydensecrf2 from ``GPU_CHECK_WHEELS`` if needed, the offline editable
   install with the extension built for this GPU only (``build``), and the extension check;
2. ``pytest -m cuda``;
3. the op benchmarks at GPU sizes (``bench/bench_ptc.py``, ``bench_par.py``, ``bench_crf.py``);
4. the train-step benchmark (``bench/bench_train_step.py``, ViT-B/448, B=4);
5. 50 iterations of synthetic training with ``--bf16`` and with ``--fp16``.

Writes ``report.md``, ``results.csv``, ``steps.csv``, ``env.json`` and ``logs/`` to ``GPU_CHECK_OUT``
(``gpu_check_out/``). ``GPU_CHECK_DRY=1`` runs each step's CPU fallback at tiny sizes (CI does, so the script cannot
rot). Modules: ``cli`` (entry point), ``plan`` (steps, sizes, budgets), ``runner`` (one step under a timeout),
``report`` (outputs), ``probe`` (environment, extension check), ``build`` (the install), and ``aot`` (ahead-of-time
compilation of every Triton kernel for sm_80/sm_90, run by CI without a GPU).
"""
