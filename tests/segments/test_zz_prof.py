import cProfile, pstats
from segments import services

def test_prof(demo_project):
    run = services.score_run_request(project=demo_project)
    prof = cProfile.Profile()
    prof.enable()
    services.score_run_execute(run_id=run.pk)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
