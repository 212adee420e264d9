"""Multi-process concurrency checker: the command line of ``vecpack.bench.stress`` (see its docstring).

    python bench/stress.py --seconds 120 --writers 2 --readers 2 --http --out docs/results
"""

from vecpack.bench.stress import main

if __name__ == "__main__":
    main()
