"""Run one Scrapy request and print what happened as JSON (run as a separate process).

Usage: python _spider.py URL OUT.json [--factory] [--verify] [--policy FILE]

``--factory`` sets DOWNLOADER_CLIENTCONTEXTFACTORY to tlspin's pinned factory with
TLSPIN_POLICY=FILE; without it Scrapy runs with its defaults (pinned only by tlspin run/inject).
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any


def main(argv: list[str]) -> None:
    import scrapy
    from scrapy.crawler import CrawlerProcess

    from tlspin.integrations import find_pin_error

    url, out = argv[0], argv[1]
    if "--inject" in argv:
        import tlspin

        tlspin.inject(tlspin.PinPolicy.load(argv[argv.index("--inject") + 1]))
    result: dict[str, Any] = {}

    class Once(scrapy.Spider):
        name = "once"

        async def start(self) -> Any:
            yield scrapy.Request(url, callback=self.parse, errback=self.failed, dont_filter=True)

        def parse(self, response: Any) -> None:
            result.update(status=response.status, body=response.text)

        def failed(self, failure: Any) -> None:
            error = find_pin_error(failure.value)
            result.update(
                error=type(failure.value).__name__,
                text=str(failure.value),
                pin_error=None if error is None else type(error).__name__,
                pin_reason=None if error is None else error.reason,
                pin_message=None if error is None else str(error),
            )

    settings: dict[str, Any] = {
        "LOG_LEVEL": "ERROR",
        "RETRY_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "DOWNLOAD_VERIFY_CERTIFICATES": "--verify" in argv,
    }
    if "--factory" in argv:
        factory = "tlspin.integrations.scrapy.PinnedContextFactory"
        settings["DOWNLOADER_CLIENTCONTEXTFACTORY"] = factory
        settings["TLSPIN_POLICY"] = argv[argv.index("--policy") + 1]
    warnings.simplefilter("ignore")  # the factory setting is deprecated in Scrapy 2.13+
    process = CrawlerProcess(settings=settings)
    process.crawl(Once)
    process.start()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
