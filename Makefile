# The README's commands. Each target sets up .venv itself, so a fresh clone needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= $(abspath ../shared/data)

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# one stamp per extra set, rebuilt when pyproject.toml changes
$(VENV)/.%.stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[$(subst +,$(comma),$*)]'
	touch $@
comma := ,

test: $(VENV)/.dev.stamp
	$(BIN)/python -m pytest

lint: $(VENV)/.dev.stamp
	$(BIN)/ruff check src tests bench

# the demo runs on the SciFact embeddings when ../shared/data is there; otherwise it embeds
# the pydoc topics with all-MiniLM-L6-v2, which needs the (CPU-only, pinned) embed extra
demo: $(VENV)/.cli.stamp
	@if [ ! -d "$(DATA)/scifact" ]; then $(MAKE) $(VENV)/.cli+embed.stamp; fi
	VECPACK_DATA="$(DATA)" $(BIN)/vecpack demo

# every figure in README and docs/results comes from here (on 2 cores about 7 hours for the budget sweep,
# most of it FAISS's OPQ training, and about 3 for the rest; 6 GB of scratch
# disk); the ~50k SciFact-sentence set is embedded once into ~/.cache/vecpack (embed extra, ~11 min)
bench: $(VENV)/.bench+embed+server.stamp
	VECPACK_DATA="$(DATA)" $(BIN)/vecpack bench --dataset scifact --out docs/results
	VECPACK_DATA="$(DATA)" $(BIN)/vecpack bench --dataset msmarco-dl19 --out docs/results
	$(BIN)/python bench/storage_choice.py --out docs/results
	$(BIN)/python bench/scale.py --n 1000000 --out docs/results
	$(BIN)/python bench/scale.py --n 1000000 --codec int8 --index graph --out docs/results
	rm -rf .cache/scale-db
	VECPACK_DATA="$(DATA)" $(BIN)/python bench/embed_sentences.py
	for ds in scifact msmarco-dl19 mnist scifact-sentences synthetic:1000000:384; do \
	  VECPACK_DATA="$(DATA)" $(BIN)/python bench/ann.py --dataset $$ds --out docs/results || exit 1; done
	for ds in scifact-sentences mnist scifact; do \
	  VECPACK_DATA="$(DATA)" $(BIN)/python bench/insertion_order.py --dataset $$ds || exit 1; done
	VECPACK_DATA="$(DATA)" $(BIN)/python bench/churn.py --dataset scifact-sentences
	VECPACK_DATA="$(DATA)" $(BIN)/python bench/budget.py --train-rows 16384 --fit-threads 2
	VECPACK_DATA="$(DATA)" $(BIN)/python bench/autotune.py --dataset scifact
	for ds in scifact msmarco-dl19 synthetic:100000:384; do \
	  VECPACK_DATA="$(DATA)" $(BIN)/python bench/rabitq.py --dataset $$ds --bits 1 2 4 8 || exit 1; \
	  VECPACK_DATA="$(DATA)" $(BIN)/python bench/rbin.py --dataset $$ds || exit 1; done
	for ds in scifact synthetic:100000:384; do \
	  VECPACK_DATA="$(DATA)" $(BIN)/python bench/pq_variants.py --dataset $$ds || exit 1; done
	VECPACK_DATA="$(DATA)" $(BIN)/python bench/lvq_graph.py
	VECPACK_DATA="$(DATA)" $(BIN)/python bench/filtered.py --dataset scifact-sentences
	$(BIN)/python bench/filtered.py --dataset synthetic:200000:384
	$(BIN)/python bench/filtered.py --dataset synthetic:1000000:384 --queries 500 --peer-queries 50
	$(BIN)/python bench/tenants.py --dataset synthetic:1000000:384 --tenants 1000
	$(BIN)/python bench/load.py --out docs/results
	$(BIN)/python bench/load.py --crash --out docs/results
	$(BIN)/python bench/stress.py --seconds 600 --writers 2 --readers 2 --http --out docs/results
	$(BIN)/python bench/cold_start.py --out docs/results
	$(BIN)/python bench/maintenance_load.py --out docs/results
	$(BIN)/python bench/overhead.py --out docs/results

clean:
	rm -rf $(VENV) build *.egg-info
