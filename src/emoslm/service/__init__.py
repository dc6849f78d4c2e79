"""The emotion-aware voice service: ``emoslm serve`` (HTTP API, OpenAI-compatible chat, web page).

    from emoslm.service import Settings, create_app
    app = create_app(Settings(bundle="runs/demo/bundle", data_dir="data/service", llm="smollm2"))
"""

from emoslm.service.app import create_app
from emoslm.service.core import Service, Settings

__all__ = ["Service", "Settings", "create_app"]
