"""Newsroom business logic: publishing, tagging, desk summaries."""

from django.db import transaction
from django.utils.text import slugify

from .models import Section, Story, Tag


def publish(story):
    """Validate and publish one story; the byline needs the reporter."""
    story.slug = slugify(f"{story.reporter.name} {story.headline}")[:50]
    story.published = True
    story.full_clean(exclude=["tags"])
    story.save()
    return story


def publish_all(stories):
    with transaction.atomic():
        return [publish(story) for story in stories]


def tag_story(story, names):
    """Tag a story, creating tags on first use (one get_or_create per name)."""
    tags = [Tag.objects.get_or_create(name=name)[0] for name in names]
    story.tags.add(*tags)
    return tags


def section_sizes(sections):
    return {section.name: section.stories.count() for section in sections}


def desk_sections(names):
    sections = [Section.objects.get_or_create(name=name)[0] for name in names]
    return section_sizes(sections)


def front_page():
    """Headlines with bylines for the front page (efficient: one query)."""
    return [f"{s.headline} — {s.reporter.name}"
            for s in Story.objects.select_related("reporter").filter(published=True)]


def beats_of(reporters):
    return [r.beat.topic for r in reporters]


def story_count():
    return Story.objects.count()
