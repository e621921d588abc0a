"""The troubleshooting guide's commands, served by the runtime.

``build_guide_router(admin_router.context, GuideHooks(...))`` adds the endpoints of the guide
(/work/shared/seed/000_f7245299e5920fc4.txt) that the admin router does not serve: the analyses
(:mod:`.analyses` over :mod:`.facts`), the config family (:mod:`.flat_config` maps the guide's flat
keys onto the real config), and the optimize / memory / emergency / recovery actions
(:mod:`.actions`). docs/runbook.md maps every command of the guide to its endpoint.
"""
