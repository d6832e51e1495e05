"""fabnode's adapters: the pure core (``fabnode.protocol``) and the store wired to the world.

The home directory (:mod:`.home`); files in and out of the store (:mod:`.files`); signed records
made and read (:mod:`.commons`); sneakernet export, have and import (:mod:`.sneakernet`); and the
daemon (:mod:`.daemon`) with its libp2p host (:mod:`.host`), fetch (:mod:`.fetch`), sync
(:mod:`.sync`), seeding (:mod:`.seeding`), the control channel to the command line
(:mod:`.control`, :mod:`.status`) and the HTTP gateway and pages (:mod:`.web`, :mod:`.pages`).
"""
