# smearscan developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned and installed first: a bare `torch` requirement would pull several GB of CUDA wheels.
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out

# Training data of the default weights (read-only, never copied into the package).
DATA ?= ../shared/data
TRAIN_DATA := --data $(DATA)/wbc-seg/jiangxi@0.15 --data $(DATA)/wbc-seg/cellavision@0.10 \
	--data $(DATA)/txl-pbc/train
TRAIN_OPTS := --arch unet --width 8 --depth 4 --input-pixel-size 0.2 --epochs 20 \
	--schedule cosine --patience 30 --max-crops 1 --strong-repeat 4 --seed 0
RUNS ?= runs
SHIPPED_NAME ?= unet-v1
# The shipped cell classifier: PBC crops and the typed wbc-seg cells at their pixel sizes,
# 30 % of each dataset's classes held out.
CLASSIFIER_DATA := --data $(DATA)/pbc-cells@0.1 --data $(DATA)/wbc-seg/jiangxi@0.15 \
	--data $(DATA)/wbc-seg/cellavision@0.10
CLASSIFIER_OPTS := --task classify --epochs 40 --width 16 --batch-size 32 --test-fraction 0.3 \
	--val-fraction 0.15 --seed 0
CLASSIFIER_NAME ?= cellnet-v1

.PHONY: install browser demo test test-slow test-gpu lint bench weights cv classifier clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the preview-page test. Best effort: without it (not root,
# no package mirror) the browser test is skipped with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: the browser test will be skipped"

demo: install
	$(VENV)/bin/smearscan process sample_slides --out $(DEMO_OUT)/report.xlsx

test: install browser
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

test-gpu: install
	$(PY) -m pytest -m gpu

lint: install
	$(VENV)/bin/ruff check smearscan tests benchmarks
	$(VENV)/bin/mypy smearscan

bench: install
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/classical_dice.py

# One recipe, one run: 5-fold cross-validation of the default model on $(DATA) (about
# 95 min on 2 CPU cores). Its fold 1 model is the shipped one (see
# smearscan/weights/MODEL_CARD.md).
$(RUNS)/cv/cv_summary.csv: | install
	$(VENV)/bin/smearscan train $(TRAIN_DATA) $(TRAIN_OPTS) --folds 5 --out $(RUNS)/cv

# The shipped segmentation weights: fold 1 of that run, copied into the package; prints
# the sha256 to record in smearscan/registry.py.
weights: $(RUNS)/cv/cv_summary.csv
	$(PY) benchmarks/ship_weights.py $(RUNS)/cv/fold1/best.pt --name $(SHIPPED_NAME) --tile 1344

# The cross-validated scores, at the source resolution through `process`.
cv: $(RUNS)/cv/cv_summary.csv
	$(PY) benchmarks/cv_wbcseg.py $(RUNS)/cv --csv $(RUNS)/cv/wbcseg_scores.csv

# The shipped classifier (about 40 min on 2 CPU cores: 30 to find and measure the cells): trained, calibrated and scored on
# its held-out test share (runs/classifier/confusion_test.csv), then copied into the
# package; prints the sha256 to record in smearscan/classify.py.
$(RUNS)/classifier/classifier.pt: | install
	$(VENV)/bin/smearscan train $(CLASSIFIER_DATA) $(CLASSIFIER_OPTS) --out $(RUNS)/classifier

classifier: $(RUNS)/classifier/classifier.pt
	install -m 644 $(RUNS)/classifier/classifier.pt smearscan/weights/$(CLASSIFIER_NAME).pt
	install -m 644 $(RUNS)/classifier/test_images.txt smearscan/weights/$(CLASSIFIER_NAME).held_out.txt
	cd smearscan/weights && sha256sum $(CLASSIFIER_NAME).pt | tee $(CLASSIFIER_NAME).pt.sha256

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache .mypy_cache
