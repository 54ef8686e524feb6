"""Hand-written serializers, as a REST API without a framework writes them."""


def story_data(story):
    return {
        "id": story.pk,
        "headline": story.headline,
        "section": story.section.name,
        "reporter": story.reporter.name,
    }


def story_data_with_tags(story):
    return dict(story_data(story), tags=[t.name for t in story.tags.all()])
