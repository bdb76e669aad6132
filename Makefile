VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test lint typecheck bench clean

# Debian packages for the TTS captions dataset (espeak-ng, flite, festival + a voice). Installed only
# when missing and when we may (root or passwordless sudo); the tests that need them skip otherwise.
# Debian chromium drives the web page test (tests/server/test_page_browser.py), the same way.
# Fonts and the Tesseract OCR engine for the text-image dataset and its benchmark (docs/images.md), the same way.
TTS_PACKAGES := espeak-ng flite festival festvox-kallpc16k
BROWSER_PACKAGES := chromium
IMAGE_PACKAGES := fonts-dejavu-core fonts-liberation fonts-freefont-ttf fonts-noto-core tesseract-ocr tesseract-ocr-eng
system-deps:
	@if command -v espeak-ng >/dev/null && command -v flite >/dev/null && command -v festival >/dev/null \
		&& command -v chromium >/dev/null && command -v tesseract >/dev/null \
		&& [ -d /usr/share/fonts/truetype/freefont ] && [ -d /usr/share/fonts/truetype/noto ]; then \
		echo "system packages present: $(TTS_PACKAGES) $(BROWSER_PACKAGES) $(IMAGE_PACKAGES)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TTS_PACKAGES) $(BROWSER_PACKAGES) $(IMAGE_PACKAGES); \
	elif sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TTS_PACKAGES) \
			$(BROWSER_PACKAGES) $(IMAGE_PACKAGES); \
	else \
		echo "note: cannot install $(TTS_PACKAGES) $(BROWSER_PACKAGES) $(IMAGE_PACKAGES) (not root); TTS, browser and OCR tests skip"; \
	fi

$(STAMP): pyproject.toml
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m transduce.cli.demo

test: install system-deps
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check transduce tests benchmarks
	$(VENV)/bin/mypy transduce

bench: install
	$(PY) benchmarks/mt_train.py
	$(PY) benchmarks/mt_decode.py

clean:
	rm -rf $(VENV) build *.egg-info
