"""What a browser test needs to hear Content-Security-Policy violations: each page of a Playwright page,
from its first script on, records every `securitypolicyviolation` event, for ``csp_violations`` to read."""

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => window.cspViolations.push(
  `${event.effectiveDirective} refused ${event.blockedURI || "inline"} at ${event.sourceFile}:${event.lineNumber}`));
"""


def watch_csp(page) -> None:
    page.add_init_script(RECORD_VIOLATIONS)


def csp_violations(page) -> list[str]:
    return page.evaluate("window.cspViolations")
