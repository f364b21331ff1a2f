"""``flickerless templates [show NAME]``: the bundled task templates."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("templates", help="list the task templates, or print one (templates show NAME)",
                       description="List the bundled task templates with one line each; `show NAME` prints one "
                       "(copy it, edit it, and pass the file to `flickerless run`).")
    p.add_argument("action", nargs="?", default="list", metavar="list|show",
                   help="list (default) or show NAME; a template's name alone shows it too")
    p.add_argument("name", nargs="?", help="template to show")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..errors import InputError
    from ..pipelines.templates import list_templates, template_text

    if args.action not in ("list", "show"):  # `templates stylize`: as `templates show stylize`
        if args.name:
            raise InputError(f"templates {args.action} {args.name}: say `templates list` or `templates show NAME`")
        args.action, args.name = "show", args.action
    if args.action == "show":
        if not args.name:
            raise InputError("templates show NAME: which template? " + ", ".join(n for n, _ in list_templates()))
        print(template_text(args.name), end="")
        return 0
    if args.name:  # `templates list stylize` listed them all, the word ignored
        raise InputError(f"templates list takes no name; `templates show {args.name}` prints one")
    rows = list_templates()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0
