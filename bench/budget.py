"""Budget sweep of every codec family against FAISS: the command line of ``vecpack.bench.budget`` (see its docstring).
"""

from vecpack.bench.budget import main

if __name__ == "__main__":
    main()
