"""booted's tasks, all flat at the top level (fab --list). Thin: the engine lives in booted/."""

from invoke import Collection

from fabfile import chaos, deploy, envmanager, hostbuilder, hostmanager, monitor, netimpair, snapshots

ns = Collection()
for _module in (chaos, envmanager, hostbuilder, hostmanager, monitor, netimpair, snapshots):
    for _task in _module.TASKS:
        ns.add_task(_task)
for _task in deploy.service_tasks():
    ns.add_task(_task)
