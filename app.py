"""Training Studio UI (also the Hugging Face Space entry point).

    python app.py                       # http://127.0.0.1:7860, the queue served from this process
    python app.py --listen --auth u:p   # reachable from the network, with a password
    python app.py --share --auth u:p    # a public gradio.live link, with a password

See `python app.py --help` and `studio/ui/app.py`.
"""
import sys

from studio.ui.app import main

if __name__ == "__main__":
    sys.exit(main())
